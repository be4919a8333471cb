# leadflow: every target does its own set-up (venv, packages, services) on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv up down status demo test test-unit lint schema-check bench bench-profile chaos clean

help:
	@echo "make demo   - start the local stack, run 1,000 leads end to end, show the results"
	@echo "make test   - start the local stack and run the test suite"
	@echo "make test-unit - the tests that need no service (no stack; 30-40 s)"
	@echo "make up / down / status - the local stack (Kafka, Postgres, SeaweedFS S3, Azurite, registry)"
	@echo "make lint   - ruff, mypy --strict and the import layers (import-linter)"
	@echo "make schema-check - every schemas/*.avsc against the registry (BACKWARD), the broken field named"
	@echo "make bench  - benchmarks side by side (QUICK=1: under 3 minutes); results in bench/results/"
	@echo "make chaos  - fault injection: leads under faults, nothing lost or duplicated (SOAK=600)"

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

# The demo writes its events in the Confluent wire format through the stack's registry
# (README "Event encoding"); LEADFLOW_EVENT_ENCODING=single-object make demo: the other one.
demo: venv up
	LEADFLOW_EVENT_ENCODING=$${LEADFLOW_EVENT_ENCODING:-registry} $(BIN)/leadflow demo

# The event schema's evolution: every version in schemas/history and schemas/lead_event.avsc
# registered in order with the registry, and the current one against what every leadflow
# subject registered last (tests/schemas: the same tests run in `make test`).
schema-check: venv
	bash stack/up.sh registry
	$(BIN)/pytest -q tests/schemas/test_schema_check.py tests/schemas/test_compatibility.py tests/schemas/test_evolution.py

# Debian's Chromium for the operator UI's browser tests (tests/engine/ui); installed if missing.
chromium:
	bash stack/chromium.sh

# Most tests wait on Kafka, Postgres and the stores rather than compute, so they run in
# TEST_WORKERS processes; the `serial` ones (they stop shared services, or load the whole
# machine) run alone afterwards. Exit 5 is "nothing selected" (PYTEST_ARGS picked a subset).
TEST_WORKERS ?= 3

test: venv up chromium
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" --durations=25 $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -m serial --durations=10 $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Every test not marked `stack` (nor `serial`), wherever it lives, with no service running:
# tests/service_guard.py fails a test that touches one without the marker. No `up` here;
# .ci/run runs this before anything starts the stack, and checks that nothing answers.
UNIT_WORKERS ?= auto

test-unit: venv
	$(BIN)/pytest -n $(UNIT_WORKERS) -m "not stack and not serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The bench has its own venv: quixstreams (the peer) pins confluent-kafka below the dev
# venv's, and leadflow and its peer must run on the same client to be compared.
BENCH_VENV := bench/.venv
BENCH_INSTALLED := $(BENCH_VENV)/.installed
BENCH_ARGS ?=
PROFILE_ROLE ?= step

$(BENCH_INSTALLED): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[bench]'
	touch $@

bench: $(BENCH_INSTALLED) up
	$(BENCH_VENV)/bin/python -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

# py-spy flame graph of one scenario's worker (PROFILE_ROLE: step, passthrough, peer,
# projector, replay): bench/results/profile-<role>.svg; --native shows librdkafka/fastavro C.
bench-profile: $(BENCH_INSTALLED) up
	$(BENCH_VENV)/bin/py-spy record --subprocesses --rate 200 --format flamegraph \
		-o bench/results/profile-$(PROFILE_ROLE).svg -- \
		$(BENCH_VENV)/bin/python -m bench --only $(PROFILE_ROLE) --rounds 1 --events 60000

# Fault injection (chaos/): its own 3-node Kafka cluster and private Postgres/S3/Azure, so the
# shared stack is never stopped. SOAK=SECONDS: a steady-rate soak with lag and RSS over time.
CHAOS_ARGS ?=

chaos: venv
	$(BIN)/python -m chaos $(if $(SOAK),--soak $(SOAK)) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
