"""What every job shares: storage paths (local and s3://), flags and config files,
Ray start-up, SQL literals, fault-test points and the keyword model."""
