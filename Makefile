# Everything runs from a project-local virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

install: $(STAMP)

# The venv's own pip, not upgraded: it installs this project in about 2 minutes here,
# where pip 26 spent about 9 resolving against the machine's package indexes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check pipelines vtr_models tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

demo: $(STAMP)
	rm -rf demo_output
	$(BIN)/vtr demo --output demo_output

clean:
	rm -rf $(VENV) demo_output
