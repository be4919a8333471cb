"""Schemathesis against ``create_app``'s own OpenAPI document, in process (ASGI), with the real
stack behind it: every operation, tens of generated requests each (valid and invalid, from a
fixed seed, so a run is repeatable), none may answer a 5xx, nor anything the document does not
declare (status, content type, body schema).

Known ids are seeded (a flow with HTTP intake and pings whose steps run, delivered leads in the
timeline) and offered to the generator as a dictionary, so requests reach found-it answers as
well as not-found ones; the intake key and a UI read key are sent with every request.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.api.app import create_app
from engine.demo.buyer import BuyerServer
from engine.ids import new_lead_id
from engine.runtime.registry import apply_flow, delete_flow
from engine.settings import Settings, UiKey
from projectors.exports.jobs import migrate_exports
from projectors.generations import migrate_database
from projectors.store import connect
from tests.conftest import _delete_topics_of, _drop_schemas_of
from tests.engine.api.conftest import API_KEY, KEY_ENV, intake_flow
from tests.factories import make_lead_events
from tests.kafka_helpers import run_steps
from tests.projectors.exports.conftest import write_events

# One worker runs every operation: the module seeds a flow with running steps once, not per worker.
pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("fuzz")]

UI_KEY_ENV = "LEADFLOW_TEST_FUZZ_UI_KEY"
UI_KEY = "test-fuzz-ui-key-5b1e07"
BASE_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# What the fuzzed app serves, fixed at import: schemathesis parametrizes the test over the
# operations of a schema it is given at collection time (its lazy ``from_fixture`` loader
# fails under pytest 9: it sets a private attribute pytest no longer has). Nothing connects
# before the fixtures run.
UNIQUE = "tfz" + uuid.uuid4().hex[:10]
SETTINGS = Settings().model_copy(
    update={
        "db_schema": UNIQUE,
        # The fuzzer's key may do everything a buyer or operator may, as often as it likes:
        # refusals (403, 429) would keep its requests from the routes' own answers.
        "ui_keys": (
            UiKey(
                name="fuzz",
                key_env=UI_KEY_ENV,
                scopes=("read", "pii", "feedback:*", "intake:*"),
                rate_per_minute=1_000_000,
            ),
        ),
        "export_worker_in_api": False,
        "flow_file": "tests/flows/none.yaml",
        # Feedback it posts stays its own: no other test's feedback worker reads it.
        "feedback_topic": f"leadflow.{UNIQUE}.feedback",
    }
)
APP = create_app(SETTINGS)
# Three delivered leads of the flow (``UNIQUE``), a second apart: their ids are known now.
LEADS = [
    make_lead_events(UNIQUE, new_lead_id(BASE_MS + 1000 * i), BASE_MS + 1000 * i) for i in range(3)
]
LEAD_IDS = [lead[0]["lead_id"] for lead in LEADS]
EVENT_IDS = [event["id"] for lead in LEADS for event in lead]


@pytest.fixture(scope="module")
def _keys() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (KEY_ENV, UI_KEY_ENV)}
    os.environ.update({KEY_ENV: API_KEY, UI_KEY_ENV: UI_KEY})
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def seeded(stack: Settings, _keys: None) -> Iterator[None]:
    """The app's schema migrated; the intake flow (with pings) applied and its steps running;
    ``LEADS`` in the timeline. Afterwards the app's intake service is stopped and everything
    the module made is removed."""
    migrate_database(SETTINGS)
    migrate_exports(SETTINGS)
    buyer = BuyerServer(port=0, mix=False)
    buyer.start_in_thread()
    flow = intake_flow(
        UNIQUE, buyer.url, timeout_ms=3000, ping={"fields": ["state", "postal_code"]}
    )
    apply_flow(SETTINGS, flow)
    stop = threading.Event()
    threads = run_steps(SETTINGS, flow, stop)
    with connect(SETTINGS) as conn:
        write_events(conn, [e for lead in LEADS for e in lead])
    try:
        yield
    finally:
        # Schemathesis ends the app's lifespan after each test; this makes sure the last one's
        # intake service (its Kafka consumer, its pool) is stopped before its flow goes.
        shutdown_lifespans()
        stop.set()
        for thread in threads:
            thread.join(30)
        buyer.stop()
        delete_flow(SETTINGS, flow.id)
        _delete_topics_of(SETTINGS, UNIQUE)
        _drop_schemas_of(SETTINGS, UNIQUE)


def _known(values: list[str]) -> dict[str, list[str]]:
    return {"values": values}


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 14,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "headers": {"X-API-Key": API_KEY, "Authorization": f"Bearer {UI_KEY}"},
        "dictionaries": {
            "flows": _known([UNIQUE]),
            "sources": _known(["source"]),
            "leads": _known(LEAD_IDS),
            "events": _known(EVENT_IDS),
        },
        "parameters": {
            "path.flow_id": {"dictionary": "flows", "probability": 0.7},
            "query.flow_id": {"dictionary": "flows", "probability": 0.5},
            "path.source_id": {"dictionary": "sources", "probability": 0.7},
            "path.lead_id": {"dictionary": "leads", "probability": 0.5},
            "query.lead_id": {"dictionary": "leads", "probability": 0.3},
            "path.event_id": {"dictionary": "events", "probability": 0.5},
            "query.event_id": {"dictionary": "events", "probability": 0.5},
            "query.after_id": {"dictionary": "events", "probability": 0.5},
            "query.before_id": {"dictionary": "events", "probability": 0.5},
            "query.to": {"dictionary": "events", "probability": 0.5},
            "query.from": {"dictionary": "events", "probability": 0.5},
        },
    }
)
schema = schemathesis.openapi.from_dict(APP.openapi(), config=CONFIG)
schema.app = APP  # requests go to the app in process (ASGI), as from_asgi would send them


def _operations() -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


@pytest.mark.usefixtures("seeded")
def test_no_server_error_and_nothing_the_openapi_does_not_declare() -> None:
    """Every operation of the OpenAPI, ``MAX_EXAMPLES`` cases each.

    One test that walks the operations itself, rather than ``schema.parametrize()``: its
    items all get the same node id, which pytest-xdist's schedulers take for one test (only
    one operation ran under ``make test``)."""
    operations = _operations()
    assert len(operations) > 25
    for operation in operations:

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            check()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
