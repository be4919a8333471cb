"""A destination's lifecycle event is never lost: Kafka away at the moment the change
commits, the event waits in the outbox and the relay publishes it once Kafka answers,
exactly one record per event."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from engine.flows import Flow
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.outbox_relay import SYSTEM_EVENTS_TOPIC, OutboxRelay
from engine.settings import Settings
from engine.state.postgres import connect
from streamers.lifecycle import DEACTIVATED, Lifecycle, read_events
from tests.streamers.support import streaming_flow
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

# Nothing listens there: every Kafka call of the lifecycle fails (connection refused).
NO_BROKER = "127.0.0.1:1"


@pytest.fixture
def schema_settings(stack: Settings, unique_id: str) -> Settings:
    return stack.model_copy(update={"db_schema": unique_id})


@pytest.fixture
def flow(schema_settings: Settings, unique_id: str) -> Flow:
    return streaming_flow(schema_settings, unique_id, prefix=unique_id)


def outbox_rows(settings: Settings) -> list[tuple[Any, ...]]:
    with connect(settings) as conn:
        return conn.execute(
            "SELECT id, type, flow_id, subject, data, reason, published_at IS NOT NULL"
            " FROM system_event_outbox ORDER BY id"
        ).fetchall()


def system_events(settings: Settings, ids: set[str]) -> list[dict[str, Any]]:
    """The records of ``leadflow.system-events`` with these ids, as read_committed readers
    see them (an aborted attempt would not show)."""
    reader = TopicReader(settings, [(SYSTEM_EVENTS_TOPIC, 0)], "test")
    try:
        records, complete = reader.read_to_end(20.0)
    finally:
        reader.close()
    assert complete
    bodies = [orjson.loads(r.value() or b"{}") for r in records]
    return [b for b in bodies if b.get("id") in ids]


@pytest.fixture
def relay_running(schema_settings: Settings) -> Iterator[threading.Event]:
    """Yields a switch that starts the relay role (in a thread) when set."""
    start, stop = threading.Event(), threading.Event()

    def role() -> None:
        start.wait()
        if not stop.is_set():
            OutboxRelay(schema_settings).run(stop, poll_s=0.2)

    thread = threading.Thread(target=role, daemon=True)
    thread.start()
    yield start
    stop.set()
    start.set()
    thread.join(30)


def test_kafka_away_when_the_change_commits_the_relay_publishes_the_event_later_once(
    schema_settings: Settings, flow: Flow, relay_running: threading.Event
) -> None:
    destination = flow.destinations[0]
    away = schema_settings.model_copy(update={"kafka_bootstrap_servers": NO_BROKER})
    lifecycle = Lifecycle(away, publish_timeout=2.0)

    outcome = lifecycle.disable(flow.id, destination)  # commits, then cannot publish

    assert (outcome.state, outcome.changed) == ("disabled", True)
    state = Lifecycle(schema_settings).state(flow.id, destination.key)
    assert state is not None and state.state == "disabled"  # the change stands
    [row] = outbox_rows(schema_settings)
    event_id, type_, flow_id, subject, data, reason, published = row
    assert (type_, flow_id, reason, published) == (DEACTIVATED, flow.id, "disabled by the user",
                                                   False)  # fmt: skip
    assert subject == f"flows/{flow.id}/destinations/{destination.key}"
    assert data["key"] == destination.key and data["state"] == "disabled"
    assert data["kind"] == destination.kind and data["bucket"] == destination.bucket
    assert read_events(schema_settings, flow.id) == []  # nothing reached Kafka

    relay_running.set()  # Kafka answers again, to the relay role
    wait_until(lambda: outbox_rows(schema_settings)[0][6], 30.0, "the relay to publish")

    trail = read_events(schema_settings, flow.id)
    assert [(e.id, e.type, e.destination, e.reason) for e in trail] == [
        (event_id, DEACTIVATED, destination.key, "disabled by the user")
    ]
    assert trail[0].data == data
    published = system_events(schema_settings, {event_id})
    assert [(e["id"], e["type"], e["subject"], e["data"]) for e in published] == [
        (event_id, DEACTIVATED, subject, data)
    ]
    # Passes after that publish nothing again.
    assert OutboxRelay(schema_settings).publish_pending() == 0
    assert len(system_events(schema_settings, {event_id})) == 1


def test_every_change_of_a_run_of_changes_is_published_once(
    schema_settings: Settings, flow: Flow
) -> None:
    """Changes made with Kafka away and with Kafka back, interleaved: each event once, in
    the order of the changes."""
    destination = flow.destinations[1]
    away = Lifecycle(
        schema_settings.model_copy(update={"kafka_bootstrap_servers": NO_BROKER}),
        publish_timeout=1.0,
    )
    here = Lifecycle(schema_settings)
    away.disable(flow.id, destination)
    here.deactivate(flow.id, destination, "not active: refused")  # no change, no event
    away.enable(flow, destination)  # verified (the store answers): active; Kafka does not
    here.disable(flow.id, destination)  # publishes its event and the two pending ones
    here.close()

    rows = outbox_rows(schema_settings)
    assert [(r[1], r[5], r[6]) for r in rows] == [
        (DEACTIVATED, "disabled by the user", True),
        ("event_destination.activated", "enabled by the user", True),
        (DEACTIVATED, "disabled by the user", True),
    ]
    ids = [r[0] for r in rows]
    assert [e.id for e in read_events(schema_settings, flow.id)] == ids
    counts = Counter(e["id"] for e in system_events(schema_settings, set(ids)))
    assert counts == dict.fromkeys(ids, 1)
