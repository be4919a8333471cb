"""Caps and duplicates on the real broker and Postgres: exact, also when workers are killed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.ids import new_lead_id
from engine.runtime.kafka.config import producer_config
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings, get_settings
from engine.state.store import StateStore
from engine.steps.cap_checks import cap_checks, recipient_scope
from engine.topics import intake_topic
from tests.factories import write_flow
from tests.kafka_helpers import events_by_lead, read_events, run_steps
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

DAY_MS = 86_400_000
# Fixed submission times: the cap windows come from them, not from the clock,
# so the tests decide the same at any hour (and never straddle a midnight).
MARCH_1 = int(datetime.fromisoformat("2026-03-01T10:00:00+00:00").timestamp() * 1000)


@pytest.fixture
def state_settings(stack: Settings, unique_id: str) -> Iterator[Settings]:
    """Settings on a fresh Postgres schema, dropped afterwards.

    Also set in the environment, for the workers started as subprocesses, and
    for handlers that open their state store from the process settings.
    """
    before = os.environ.get("LEADFLOW_DB_SCHEMA")
    os.environ["LEADFLOW_DB_SCHEMA"] = unique_id
    get_settings.cache_clear()
    try:
        yield stack.model_copy(update={"db_schema": unique_id})
    finally:
        if before is None:
            del os.environ["LEADFLOW_DB_SCHEMA"]
        else:
            os.environ["LEADFLOW_DB_SCHEMA"] = before
        get_settings.cache_clear()
        with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_id))
            )


@pytest.fixture
def buyer() -> Iterator[BuyerServer]:
    server = BuyerServer(port=0, mix=False)  # takes every lead
    server.start_in_thread()
    yield server
    server.stop()


def capped_flow(flow_id: str, buyer_url: str, maximum: int) -> Flow:
    return parse_flow(
        f"""
id: {flow_id}
name: Capped buyer
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields: [{{name: email, type: email, required: true}}]
  - id: buyer
    kind: recipient
    name: Premier Leads
    settings:
      url: {buyer_url}
      mapping: {{email: lead.email}}
      caps: [{{maximum: {maximum}, duration: day, time_zone: America/Chicago}}]
""",
        f"{flow_id}.yaml",
    )


def publish(
    settings: Settings,
    flow_id: str,
    leads: list[tuple[int, dict[str, Any]]],
    partition: int | None = None,
) -> list[str]:
    """Each (submitted_ms, data) keyed by a lead id of that time, as an intake would send it.

    One partition keeps them in order, for tests where order matters."""
    producer = Producer(producer_config(settings))
    ids = []
    for submitted_ms, data in leads:
        lead_id = new_lead_id(submitted_ms)
        extra = {} if partition is None else {"partition": partition}
        producer.produce(intake_topic(flow_id), orjson.dumps(data), lead_id.encode(), **extra)
        ids.append(lead_id)
    assert producer.flush(15) == 0
    return ids


def completed_leads(settings: Settings, flow: Flow, wanted: int, timeout: float = 60) -> list[Any]:
    """The flow's events once ``wanted`` distinct leads have their ``flow.completed``."""

    def done(events: list[Any]) -> int:
        return len({e["lead_id"] for e in events if e["type"] == "flow.completed"})

    return wait_until(
        lambda: read_events(settings, flow, 5),
        timeout,
        f"{wanted} leads to complete",
        until=lambda events: done(events) >= wanted,
        every=0.5,
        show=lambda events: f"{done(events)} completed",
    )


def decisive(timeline: list[dict[str, Any]], step_id: str) -> dict[str, Any]:
    """The step's event that says what became of the lead there."""
    return next(
        e
        for e in timeline
        if e["step_id"] == step_id and e["type"] not in ("source.submitted", "flow.completed")
    )


def test_a_recipient_cap_of_3_takes_3_of_5_leads_and_fails_the_rest_without_calling(
    state_settings: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    flow = capped_flow(unique_id, buyer.url, maximum=3)
    prepare_topics(state_settings, flow)
    stop = threading.Event()
    threads = run_steps(state_settings, flow, stop)
    try:
        leads = [(MARCH_1 + n, {"email": f"lead{n}@example.com"}) for n in range(5)]
        ids = publish(state_settings, flow.id, leads)
        events = completed_leads(state_settings, flow, len(ids))
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    timelines = events_by_lead(events)
    outcomes = {lead: decisive(timelines[lead], "buyer") for lead in ids}
    delivered = [e for e in outcomes.values() if e["type"] == "recipient.delivered"]
    capped = [e for e in outcomes.values() if e["type"] == "recipient.failed"]
    assert len(delivered) == 3 and len(capped) == 2
    for event in capped:
        assert event["cap_reached"] is True
        assert event["reason"] == "Daily cap reached (3/3)"
        assert event["request"] is None  # the buyer was never called
        assert timelines[event["lead_id"]][-1]["reason"] == "Daily cap reached (3/3)"
    assert all(e["cap_reached"] is False for e in delivered)
    # One POST per delivered lead, none for the capped ones.
    assert sorted(buyer.received) == sorted(e["id"] for e in delivered)
    store = StateStore(state_settings)
    spec = flow.step("buyer").settings.caps  # type: ignore[union-attr]
    (check,) = cap_checks(recipient_scope(flow.id, "buyer"), spec, MARCH_1)
    assert store.count(check) == 3
    store.close()


def test_the_source_rejects_duplicates_and_leads_over_the_flow_cap_and_replays_alike(
    state_settings: Settings, unique_id: str
) -> None:
    flow = parse_flow(
        f"""
id: {unique_id}
name: Deduplicated form
caps: [{{maximum: 2, duration: day}}]
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields: [{{name: email, type: email, required: true}}]
      duplicate_window_days: 30
      duplicate_fields: [email]
""",
        f"{unique_id}.yaml",
    )
    prepare_topics(state_settings, flow)
    hour = 3_600_000
    ada, ada_again, bob, cy, ada_later = publish(
        state_settings,
        flow.id,
        [
            (MARCH_1, {"email": "ada@example.com"}),
            (MARCH_1 + hour, {"email": " ADA@example.com"}),
            (MARCH_1 + 2 * hour, {"email": "bob@example.com"}),
            (MARCH_1 + 3 * hour, {"email": "cy@example.com"}),
            (MARCH_1 + 40 * DAY_MS, {"email": "ada@example.com"}),
        ],
        partition=0,
    )
    # The first lead's intake record again, as a replay or an intake retry would send it.
    producer = Producer(producer_config(state_settings))
    producer.produce(
        intake_topic(flow.id), orjson.dumps({"email": "ada@example.com"}), ada.encode(), partition=0
    )
    assert producer.flush(15) == 0

    stop = threading.Event()
    threads = run_steps(state_settings, flow, stop)
    try:
        events = completed_leads(state_settings, flow, 5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    timelines = events_by_lead(events)
    outcome = {lead: decisive(timelines[lead], "source")["type"] for lead in timelines}
    reasons = {
        lead: next(e["reason"] for e in timelines[lead] if e["type"] == "source.rejected")
        for lead, kind in outcome.items()
        if kind == "source.rejected"
    }
    assert outcome == {
        ada: "source.accepted",
        ada_again: "source.rejected",
        bob: "source.accepted",
        cy: "source.rejected",
        ada_later: "source.accepted",  # 40 days on: outside the window, another day's cap
    }
    assert reasons == {
        ada_again: "Duplicate: previously submitted 2026-03-01",
        cy: "Cap reached: Daily flow cap (2/2)",
    }
    assert decisive(timelines[cy], "source")["cap_reached"] is True
    # The replayed lead is not its own duplicate: both runs recorded the same events.
    ada_events = {(e["id"], e["type"], e["reason"]) for e in timelines[ada]}
    assert len(timelines[ada]) == 6 and len(ada_events) == 3
    assert "source.rejected" not in {kind for _, kind, _ in ada_events}


def _start(role: str, flow_file: Path, schema: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": schema,
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", role, "--flow-file", str(flow_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _slots_taken(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM engine_cap_ledger").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.serial  # kill -9 at chosen moments: the machine to itself to hit them
def test_a_recipient_cap_stays_exact_when_workers_are_killed_mid_flight(
    state_settings: Settings, unique_id: str, tmp_path: Path
) -> None:
    maximum, total = 12, 30
    # Each delivery takes 80 ms, so a kill lands between a lead's reservation
    # (and its POST) and the Kafka commit that records it.
    buyer = BuyerServer(port=0, mix=False, slow_seconds=0.08)
    buyer.start_in_thread()
    flow = capped_flow(unique_id, buyer.url, maximum)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    prepare_topics(state_settings, flow)
    rng = random.Random(3)
    procs = {role: _start(role, flow_file, unique_id) for role in ("source", "buyer")}
    db = psycopg.connect(
        state_settings.database_url.get_secret_value(),
        autocommit=True,
        options=f"-c search_path={unique_id}",
    )
    try:
        leads = [(MARCH_1 + n, {"email": f"n{n}+slow@example.com"}) for n in range(total)]
        ids = publish(state_settings, flow.id, leads)
        moments = [
            # while the cap fills up
            lambda: len(buyer.received) >= 4,
            # the moment the last slot is taken: its lead is still at the buyer, so
            # its successor re-runs it at a full cap and must find its own slot
            lambda: _slots_taken(db) >= maximum,
        ]
        for moment in moments:
            wait_until(moment, 30, "the moment to kill", every=0.01)
            time.sleep(rng.uniform(0, 0.04))
            procs["buyer"].kill()  # SIGKILL: no shutdown code runs, no transaction commits
            procs["buyer"].wait()
            procs["buyer"] = _start("buyer", flow_file, unique_id)
        events = completed_leads(state_settings, flow, total, timeout=90)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
        buyer.stop()

    # The kills did land mid-flight: some leads were posted again by the worker's successor.
    assert len(buyer.received) > len(set(buyer.received))
    timelines = events_by_lead(events)
    assert set(timelines) == set(ids)
    outcomes = {lead: decisive(timelines[lead], "buyer") for lead in ids}
    delivered = {lead for lead, e in outcomes.items() if e["type"] == "recipient.delivered"}
    capped = {lead for lead, e in outcomes.items() if e["cap_reached"]}
    assert len(delivered) == maximum
    assert capped == set(ids) - delivered
    # Only delivered leads reached the buyer (a re-run repeats its POST with the same key).
    assert set(buyer.received) == {outcomes[lead]["id"] for lead in delivered}
    with db:
        held = db.execute("SELECT lead_id, confirmed_at IS NOT NULL FROM engine_cap_ledger")
        assert dict(held.fetchall()) == dict.fromkeys(delivered, True)
        assert db.execute("SELECT count FROM engine_cap_counters").fetchall() == [(maximum,)]
