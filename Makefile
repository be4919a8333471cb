# leadflow: every target does its own set-up (venv, packages, services) on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv up down status demo test test-unit lint bench clean

help:
	@echo "make demo   - start the local stack, run 1,000 leads end to end, show the results"
	@echo "make test   - start the local stack and run the test suite"
	@echo "make up / down / status - the local stack (Kafka, Postgres, SeaweedFS S3, Azurite)"
	@echo "make lint   - ruff and mypy --strict"
	@echo "make bench  - benchmarks (placeholder until the benchmark issue)"

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(INSTALLED)

up:
	bash stack/up.sh

down:
	bash stack/down.sh

status:
	bash stack/status.sh

demo: venv up
	$(BIN)/leadflow demo

test: venv up
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/engine tests/schemas $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench:
	@echo "make bench: not implemented yet - the benchmark suite arrives with its own issue (#7)."

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
