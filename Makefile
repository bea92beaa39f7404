# The README's two commands: `make demo` (set-up, then the demo) and `make test` (the test suite). Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINTED := $(wildcard mqtier tests benchmarks examples)
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/python examples/demo.py ./demo-store

lint: $(STAMP_TEST)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

unit: $(STAMP_TEST)
	$(BIN)/python -m pytest -n 2 -q

test: lint typecheck unit

bench: $(STAMP_TEST)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-store .pytest_cache .mypy_cache .ruff_cache
