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
PYTEST_WORKERS ?= 2

.PHONY: install demo test bench lint typecheck ui deploy worker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tradeloop demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check flows pipelines warehouse models trading expectations tests benchmarks
	$(BIN)/ruff format --check flows pipelines warehouse models trading expectations tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy flows pipelines warehouse models trading expectations

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
