# tradeloop: `make demo` runs the whole loop offline; `make test` runs the test suite.
# Both create .venv if missing and install what they need from the package registry.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS := false
export DO_NOT_TRACK := 1
PYTEST_WORKERS ?= 3
# extra pytest options, e.g. PYTEST_ARGS=-rfEsp (.ci/run: a line per passed test in the log)
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench lint typecheck ui deploy worker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tradeloop demo

# xdist runs PYTEST_WORKERS processes on 2 cores: torch's OpenMP pool (a thread per core in
# each process and in each CLI the tests start) oversubscribed the cores and spun; one thread
# per process lets the workers share them.
test test-fast: export OMP_NUM_THREADS := 1

# ruff and mypy are part of the test: a lint or type error fails it like a failing test.
test: lint typecheck
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (end to end, Dask, multi-process).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m "not slow" -x $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check flows pipelines warehouse models trading expectations tests benchmarks
	$(BIN)/ruff format --check flows pipelines warehouse models trading expectations tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy flows pipelines warehouse models trading expectations

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# Orchestration (deployments/prefect.yaml). `make ui` in one shell, then `make deploy` and
# `make worker` in another. PREFECT_PORT / PREFECT_API_URL / POOL override the defaults.
PREFECT_PORT ?= 4200
PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
POOL ?= tradeloop-process

ui: $(STAMP)
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)  (API $(PREFECT_API_URL); SQLite under $${PREFECT_HOME:-~/.prefect})"
	PREFECT_UI_API_URL=$(PREFECT_API_URL) $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

deploy: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect work-pool create $(POOL) --type process --overwrite
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml

worker: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect worker start --pool $(POOL)
