"""The whole system, as an operator runs it: ``leadflow run`` in its own process group.

Leads in through the intake topic; out come, for every lead, exactly the
expected events in Postgres (by type and order) and exactly one JSON object
per event in S3 and in Azure, with the same content as the event.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from engine.demo.buyer import BuyerServer
from engine.objects.contract import directory
from engine.objects.destination import open_store
from engine.ops.submit import publish_leads
from engine.settings import Settings
from projectors.queries import lead_timeline
from tests.factories import make_flow, write_flow
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

GOOD = {
    "first_name": "Ada",
    "last_name": "L",
    "phone_1": "5125550123",
    "state": "CA",
    "tcpa_consent": "yes",
}
LEADS: list[tuple[Any, list[str]]] = [
    (
        {**GOOD, "email": f"ada{i}@example.com"},
        [
            "source.submitted",
            "source.accepted",
            "filter.passed",
            "recipient.delivered",
            "flow.completed",
        ],
    )
    for i in range(12)
] + [
    (
        {**GOOD, "email": "r@example.com", "state": "WY"},
        ["source.submitted", "source.accepted", "filter.failed", "flow.completed"],
    ),
    (
        {**GOOD, "email": "x+reject@example.com"},
        [
            "source.submitted",
            "source.accepted",
            "filter.passed",
            "recipient.failed",
            "flow.completed",
        ],
    ),
    ("not json at all", ["source.submitted", "source.rejected", "flow.completed"]),
    ({"first_name": "NoEmail"}, ["source.submitted", "source.rejected", "flow.completed"]),
]


@pytest.fixture
def db_schema(stack: Settings, unique_id: str) -> Iterator[str]:
    yield unique_id
    with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{unique_id}" CASCADE')


def test_leads_flow_into_postgres_s3_and_azure_exactly_once(
    stack: Settings, unique_id: str, buyer: BuyerServer, db_schema: str, tmp_path: Path
) -> None:
    flow = make_flow(unique_id, buyer.url)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    env = {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": db_schema,
        "LEADFLOW_PROJECTOR_NAME": f"timeline-{unique_id}",
        "LEADFLOW_PROJECTOR_PATTERN": rf"^leadflow\.{unique_id}\.events\..+$",
        "LEADFLOW_LOG_FORMAT": "json",
        # Its feedback worker must not take other tests' (or the demo's) feedback.
        "LEADFLOW_FEEDBACK_TOPIC": f"leadflow.{unique_id}.feedback",
    }
    # The schema exists before the first look at it (the workers would migrate it too,
    # but maybe only after this test's first query on a busy machine).
    leadflow = [sys.executable, "-m", "engine"]
    subprocess.run([*leadflow, "db", "migrate"], env=env, check=True, capture_output=True)
    log_file = (tmp_path / "workers.log").open("wb")
    workers = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "--flow-file", str(flow_file)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    settings = Settings(db_schema=db_schema)
    try:
        ids = publish_leads(stack, flow.id, [lead for lead, _ in LEADS])
        expected_events = sum(len(types) for _, types in LEADS)
        stores = [open_store(d, stack) for d in flow.destinations]

        def recorded() -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
            """The leads' timelines in Postgres, and each store's objects, so far."""
            assert workers.poll() is None, "workers exited early"
            timelines = _timelines(settings, ids)
            objects = [
                _objects(store, flow.destinations[i].prefix, ids) for i, store in enumerate(stores)
            ]
            return timelines, objects

        def counts(seen: tuple[dict[str, list[Any]], list[dict[str, Any]]]) -> list[int]:
            return [sum(map(len, seen[0].values())), *map(len, seen[1])]

        timelines, objects = wait_until(
            recorded,
            120,
            f"{expected_events} events in Postgres, S3 and Azure",
            until=lambda seen: all(n >= expected_events for n in counts(seen)),
            every=1,
            show=counts,
        )
    finally:
        os.killpg(workers.pid, signal.SIGTERM)
        workers.wait(60)
        log_file.close()
    assert workers.returncode == 0, (tmp_path / "workers.log").read_text()[-3000:]

    for lead_id, (_, types) in zip(ids, LEADS, strict=True):
        assert [e["type"] for e in timelines[lead_id]] == types
    events = {e["id"]: e for timeline in timelines.values() for e in timeline}
    assert len(events) == expected_events
    for store_objects in objects:
        assert set(store_objects) == set(events)  # one object per event, none extra
        for event_id, body in store_objects.items():
            assert (
                body == events[event_id]
            )  # the object is the event Postgres holds, field for field
    # The same event reads the same in S3 and in Azure.
    s3_objects, azure_objects = objects
    assert s3_objects == azure_objects


def _timelines(settings: Settings, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    from projectors.store import connect

    with connect(settings) as conn:
        return {lead_id: lead_timeline(conn, lead_id) for lead_id in ids}


def _objects(store: Any, prefix: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for lead_id in ids:
        for key in store.list_keys(f"{directory(prefix)}{lead_id}/"):
            out[Path(key).stem] = orjson.loads(store.get(key))
    return out
