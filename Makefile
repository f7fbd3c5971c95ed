# Two commands matter: `make demo` and `make test`. Each bootstraps its own .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := test,s3,parquet,dev,docs

.PHONY: help venv demo test suite lint typecheck docs unit integration e2e production matrix matrix-envs bench dist clean

help:
	@echo "make demo   - run the followers example DAG end to end (local simulator, or the real API with NYNE_API_KEY/NYNE_API_SECRET)"
	@echo "make test   - lint, type check, docs, and the whole test suite (unit, integration, e2e, version matrix, production topology)"
	@echo "make docs   - build the documentation site into site/ (warnings, broken links and anchors fail it)"
	@echo "make bench  - run the benchmarks and write benchmarks/RESULTS.md"
	@echo "make dist   - build the sdist and wheel into dist/ and check them"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check airflow_provider_nyne tests example_dags benchmarks scripts docs
	$(BIN)/ruff format --check airflow_provider_nyne tests example_dags benchmarks scripts docs

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site (mkdocs.yml): --strict turns every warning into a failure, broken
# links and anchors included. NO_MKDOCS_2_WARNING silences Material's banner about MkDocs 2.0.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q -m "integration and not e2e" tests

e2e: $(STAMP)
	$(BIN)/pytest -q -m "e2e and not production" tests

# The reference topology (PostgreSQL, CeleryExecutor on Redis, two triggerers, two api-servers):
# needs PostgreSQL's server binaries and redis-server on the machine (.ci/run installs them).
production: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m production tests/e2e

# What runs on the source tree (the end-to-end tests and the checks of the repository's tooling)
# while the version-matrix venvs are built (pip mostly waits on the network and the disk); then
# the unit and integration tests against the built wheel on each matrix venv (the newest end is
# the .venv's Airflow, so running them on the source tree too would repeat them); then the
# production topology alone (it wants both cores).
test: lint typecheck docs $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target suite matrix-envs
	$(MAKE) --no-print-directory matrix
	$(MAKE) --no-print-directory production

suite: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "(e2e or repo) and not production" tests

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

dist: $(STAMP)
	rm -rf dist build
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*

# The built wheel, installed with its test extras into one clean venv per end of the supported
# Airflow range (.matrix/), runs the unit and integration tests. MATRIX_ARGS: e.g. "--airflow 3.2.1".
matrix: dist
	$(BIN)/python scripts/matrix.py $(MATRIX_ARGS)

matrix-envs: dist
	$(BIN)/python scripts/matrix.py --setup-only

clean:
	rm -rf $(VENV) .matrix dist build site .demo .bench *.egg-info
