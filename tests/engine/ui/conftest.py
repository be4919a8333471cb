"""Fixtures for the operator UI: leads that went through the real pipeline, once per session.

``ui_stack`` applies an intake flow of its own, runs its steps and the timeline projector
(into a schema of its own) in threads, serves ``leadflow serve``'s app on a free port, and
submits leads over HTTP intake - a delivered one, a hostile one (markup, very long values,
unicode in its fields and, through the filter that refuses it, in its failure reason), one
the buyer refuses and one the source rejects. A lead with hundreds of events (a buyer
erroring and being retried) is produced to the flow's events topic, so it too reaches the
UI only through the projector. Every test then reads what the projector wrote.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import Producer

from engine.api.app import create_app
from engine.demo.buyer import BuyerServer
from engine.events import LeadEvent, StepIdentity, Timing, stamp_events
from engine.flows import Flow
from engine.ids import new_lead_id
from engine.runtime.kafka.config import producer_config
from engine.runtime.registry import apply_flow, delete_flow
from engine.settings import Settings, UiKey
from engine.steps.base import EventDraft
from engine.topics import events_topic
from projectors.generations import migrate_database
from projectors.projector import TimelineProjector
from projectors.queries import lead_timeline
from projectors.store import connect
from schemas.codec import EventCodec
from tests.conftest import _delete_topics_of, _drop_schemas_of
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, KEY_ENV, intake_flow
from tests.kafka_helpers import run_steps
from tests.waiting import wait_until

PII_KEY = "test-pii-key-0123456789"
MASKED_KEY = "test-masked-key-0123456789"
HOSTILE_NAME = "<script>alert('first')</script>"
HOSTILE_LAST = '<img src=x onerror="alert(2)">'
HOSTILE_NOTE = "<b>bold</b> & <svg onload=alert(3)> — Zoë 🚀 العربية"
# The filter names the rule and the value that failed it (engine.steps.rules), so the lead's own
# text becomes its failure reason: attacker-controlled data in a column the UI highlights.
HOSTILE_REASON = f"Plain-text note: lead.note is {HOSTILE_NOTE!r}"
HOSTILE_CITY = "Zoë 🚀 العربية 漢字"
# Longer than a text field keeps (engine.fields.MAX_TEXT, 4096): the raw submission holds
# all of it, the accepted snapshot the first 4096 characters, script tag included.
LONG_VALUE = "x" * 4000 + "<script>alert(4)</script>" + "y" * 2000
# A buyer that errors on a lead and is retried, 160 times: 3 + 2 * 160 events in all.
LONG_RETRIES = 160
LONG_EVENTS = 3 + 2 * LONG_RETRIES


@dataclass(frozen=True)
class Lead:
    """A lead as the projection holds it: its id and its events (snapshots) in order."""

    lead_id: str
    events: list[dict[str, Any]]

    def first(self, type_: str) -> dict[str, Any]:
        return next(e for e in self.events if e["type"] == type_)


@dataclass(frozen=True)
class UiStack:
    """The session's flow, its projected leads, and the API serving them."""

    settings: Settings
    flow_id: str
    url: str
    good: Lead
    hostile: Lead
    refused: Lead
    rejected: Lead
    long: Lead
    email: str = "ada@example.com"
    phone: str = "5125550147"


def ui_flow(flow_id: str, buyer_url: str) -> Flow:
    """The intake test flow, with free-text fields and a filter that refuses markup in a note."""
    definition = intake_flow(flow_id, buyer_url).model_dump(mode="json")
    source, area = definition["steps"][0], definition["steps"][1]
    source["settings"]["fields"] += [
        {"name": name, "required": False} for name in ("note", "comments", "city")
    ]
    source["settings"]["intake"]["max_body_bytes"] = 262_144
    area["settings"]["rules"].append(
        {"name": "Plain-text note", "not": {"field": "lead.note", "op": "contains", "value": "<"}}
    )
    return Flow.model_validate(definition)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ui_keys() -> tuple[UiKey, ...]:
    """Two read keys by reference: ``ops`` sees PII, ``support`` (stored as a digest) does not."""
    return (
        UiKey(name="ops", key_env="LEADFLOW_TEST_UI_PII_KEY", scopes=("read", "pii")),
        UiKey(name="support", key_env="LEADFLOW_TEST_UI_MASKED_KEY", scopes=("read",)),
    )


@pytest.fixture(scope="session")
def _ui_env() -> Iterator[None]:
    """The keys' environment variables, for the whole session (restored afterwards)."""
    values = {
        "LEADFLOW_TEST_UI_PII_KEY": PII_KEY,
        "LEADFLOW_TEST_UI_MASKED_KEY": f"sha256:{_sha256(MASKED_KEY)}",
        KEY_ENV: API_KEY,
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def serve_in_thread(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str]:
    """``leadflow serve``'s app (uvicorn, one worker) on a free port; the server and its URL."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "the API to start", every=0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def long_lead_events(flow: Flow, submitted_ms: int) -> list[LeadEvent]:
    """A lead whose delivery errors and is retried ``LONG_RETRIES`` times, one second apart;
    each attempt records what the buyer said, so consecutive snapshots differ."""
    lead_id = new_lead_id(submitted_ms)
    snapshot: dict[str, Any] = {
        "lead.id": lead_id,
        "submission.timestamp": submitted_ms,
        "lead.first_name": "Retried",
        "lead.email": "retried@example.com",
        "lead.state": "TX",
    }

    def who(index: int) -> StepIdentity:
        step = flow.steps[index]
        return StepIdentity(flow.id, flow.version, step.id, step.name, index, "ui-test", "0")

    events = stamp_events(
        [
            EventDraft("source.submitted", "success", entity_id="source"),
            EventDraft("source.accepted", "success", cost=2.5, entity_id="source"),
        ],
        who(0),
        lead_id,
        submitted_ms,
        snapshot,
        Timing(submitted_ms, submitted_ms + 2, 0),
    )
    events += stamp_events(
        [EventDraft("filter.passed", "success", entity_id="service-area")],
        who(1),
        lead_id,
        submitted_ms,
        snapshot,
        Timing(submitted_ms + 5, submitted_ms + 6, 0),
    )
    for attempt in range(1, LONG_RETRIES + 1):
        at = submitted_ms + 1000 * attempt
        said: dict[str, Any] = {"appended.premier.last_error": f"HTTP 503 on attempt {attempt}"}
        events += stamp_events(
            [
                EventDraft(
                    "recipient.error",
                    "error",
                    "Buyer unavailable",
                    appended=said,
                    entity_id="premier",
                    wait_ms=400,
                ),
                EventDraft("retry.scheduled", "success", entity_id="premier"),
            ],
            who(2),
            lead_id,
            submitted_ms,
            {**snapshot, **said},
            Timing(at, at + 400, 0),
            attempt=min(attempt, 256),
        )
    return events


def _produce(settings: Settings, flow: Flow, events: list[LeadEvent]) -> None:
    """Events onto the recipient's events topic, as its worker would write them."""
    codec = EventCodec()
    producer = Producer(producer_config(settings))
    for event in events:
        producer.produce(
            events_topic(flow.id, event["step_id"]), codec.encode(event), key=event["lead_id"]
        )
    assert producer.flush(30) == 0, "events not delivered to Kafka"


def _submit(url: str, flow_id: str, body: dict[str, Any]) -> str:
    answer = httpx.post(
        f"{url}/flows/{flow_id}/sources/source",
        json=body,
        headers={"X-API-Key": API_KEY},
        timeout=30,
    )
    assert answer.status_code in (201, 202), answer.text
    return str(answer.json()["lead"]["id"])


def _wait_until_projected(settings: Settings, expected: dict[str, int], timeout: float) -> None:
    """Until the projection holds ``expected[lead_id]`` events of each lead."""
    with connect(settings) as conn:

        def counts() -> dict[str, int]:
            rows = conn.execute(
                "SELECT lead_id, count(*) FROM events WHERE lead_id = ANY(%s) GROUP BY lead_id",
                (list(expected),),
            ).fetchall()
            return {lead_id: n for lead_id, n in rows}

        wait_until(
            counts,
            timeout,
            f"projected events per lead {expected}",
            until=lambda found: all(found.get(k, 0) >= n for k, n in expected.items()),
            every=0.25,
        )


def _completed(settings: Settings, lead_ids: list[str], timeout: float) -> dict[str, int]:
    """Each lead's event count once its ``flow.completed`` is projected."""
    with connect(settings) as conn:

        def done() -> dict[str, int]:
            rows = conn.execute(
                "SELECT lead_id, count(*) FILTER (WHERE type = 'flow.completed'), count(*)"
                " FROM events WHERE lead_id = ANY(%s) GROUP BY lead_id",
                (lead_ids,),
            ).fetchall()
            return {lead_id: n for lead_id, completed, n in rows if completed}

        return wait_until(
            done,
            timeout,
            f"the {len(lead_ids)} leads' flow.completed in the projection",
            until=lambda found: len(found) == len(lead_ids),
            every=0.25,
            show=lambda found: f"{len(found)} completed",
        )


@pytest.fixture(scope="session")
def ui_stack(stack: Settings, _ui_env: None) -> Iterator[UiStack]:
    """Leads through intake, steps and projector into a schema of the session's own."""
    unique = "tui" + uuid.uuid4().hex[:9]
    settings = stack.model_copy(
        update={"db_schema": unique, "ui_keys": ui_keys(), "flow_file": "tests/flows/none.yaml"}
    )
    buyer = BuyerServer(port=0, mix=False)
    buyer.start_in_thread()
    flow = ui_flow(unique, buyer.url)
    migrate_database(settings)
    apply_flow(settings, flow)
    stop = threading.Event()
    threads = run_steps(settings, flow, stop)
    projector = TimelineProjector(settings, rf"^leadflow\.{unique}\.events\..+$", f"tl-{unique}")
    threads.append(threading.Thread(target=projector.run, args=(stop,), daemon=True))
    threads[-1].start()
    server, server_thread, url = serve_in_thread(settings)
    try:
        base = {**GOOD_LEAD, "state": "TX"}
        ids = [
            _submit(url, unique, {**base, "phone_1": "5125550147", "note": "call after 5pm"}),
            _submit(
                url,
                unique,
                {
                    **base,
                    "first_name": HOSTILE_NAME,
                    "last_name": HOSTILE_LAST,
                    "email": "mallory@example.com",
                    "phone_1": "5125550199",
                    "note": HOSTILE_NOTE,
                    "comments": LONG_VALUE,
                    "city": HOSTILE_CITY,
                },
            ),
            _submit(
                url, unique, {**base, "email": "x+reject@example.com", "phone_1": "5125550111"}
            ),
            _submit(url, unique, {"first_name": "NoEmail"}),
        ]
        long = long_lead_events(flow, int(time.time() * 1000) - 3_600_000)
        _produce(settings, flow, long)
        _completed(settings, ids, timeout=90)
        _wait_until_projected(settings, {long[0]["lead_id"]: LONG_EVENTS}, timeout=60)
        with connect(settings) as conn:
            good, hostile, refused, rejected, long_lead = (
                Lead(i, lead_timeline(conn, i)) for i in [*ids, long[0]["lead_id"]]
            )
        yield UiStack(settings, unique, url, good, hostile, refused, rejected, long_lead)
    finally:
        server.should_exit = True
        stop.set()
        for thread in [server_thread, *threads]:
            thread.join(30)
        buyer.stop()
        delete_flow(settings, flow.id)
        _delete_topics_of(settings, unique)
        _drop_schemas_of(settings, unique)


@pytest.fixture(scope="session")
def ui_settings(ui_stack: UiStack) -> Settings:
    return ui_stack.settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
