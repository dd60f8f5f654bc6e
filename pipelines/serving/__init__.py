"""What people see of a search: the page the Serve app serves, who may use it, and the
result cards a notebook shows."""
