# Two entry points (README): `make demo` runs the main job on embedded defaults,
# `make test` runs the checks and the test suite. Both set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spooler demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check spooler tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/spool_bench.py
	$(BIN)/python bench/export_bench.py
	$(BIN)/python bench/renditions_bench.py
	$(BIN)/python bench/ingest_bench.py

schema: $(STAMP)
	$(BIN)/spooler schema --write schema
	cd web && npm run --silent gen-types

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
