# Two entry points (README): `make demo` runs the main job on embedded defaults,
# `make test` runs the checks and the test suite. Both set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench fuzz schema clean web-deps

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
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/spool_bench.py
	$(BIN)/python bench/spool_phases.py
	$(BIN)/python bench/export_bench.py
	$(BIN)/python bench/export_bench.py --variant heavy
	$(BIN)/python bench/export_bench.py --quick --scaling
	$(BIN)/python bench/renditions_bench.py
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/webhook_bench.py

# The spool-state fuzzer, long mode: `make fuzz MINUTES=30`.
fuzz: $(STAMP)
	$(BIN)/python bench/spool_fuzz.py --minutes $(or $(MINUTES),10)

schema: $(STAMP)
	$(BIN)/spooler schema --write schema
	cd web && npm run --silent gen-types

# web/ (builds dist/ through its `prepare`) then the example app, which installs web/ as a
# packed copy: needs Node >= 20.19 (.ci/run provides one).
web-deps:
	cd web && npm ci --no-audit --no-fund --loglevel=error
	cd examples/next-app && npm ci --no-audit --no-fund --loglevel=error
	# s3rver: a local S3 server that checks presigned URLs (tests/s3/test_s3_signatures.py)
	cd tests/s3/s3rver && npm ci --no-audit --no-fund --loglevel=error

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .cache
	rm -rf web/node_modules web/dist examples/next-app/node_modules examples/next-app/.next
	rm -rf tests/s3/s3rver/node_modules
