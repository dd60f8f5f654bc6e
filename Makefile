# Everything runs from a project-local virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check pipelines vtr_models tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	rm -rf demo_output
	$(BIN)/python -m pipelines.demo --output demo_output

clean:
	rm -rf $(VENV) demo_output
