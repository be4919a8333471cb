"""The outbox relay: what each system event becomes on the topics, all or nothing per
Kafka transaction, and its at-least-once promise (a retry repeats an id, never loses one)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from engine.runtime.kafka.clients import new_admin, new_producer, new_transactional_producer
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.runtime.outbox_relay import (
    DESTINATIONS_TOPIC,
    FLOWS_TOPIC,
    SYSTEM_EVENTS_TOPIC,
    OutboxRelay,
    OutboxUnpublishedError,
    flow_checksum,
    records_of,
)
from engine.runtime.registry import FlowRegistry, checksum
from engine.settings import Settings
from engine.state import outbox
from engine.state.outbox import SystemEvent, record_system_event
from engine.state.postgres import connect, migrate_state
from tests.factories import make_flow

AT = datetime(2026, 12, 5, 18, 0, 0, 123_000, tzinfo=UTC)
URL = "http://127.0.0.1:9/leads"


def event(type_: str, data: dict[str, Any], flow_id: str | None = "f") -> SystemEvent:
    return SystemEvent("01KBX0000000000000000000AA", type_, flow_id, "s/1", data, "why", AT)


def test_every_event_goes_to_the_system_events_topic_keyed_by_its_subject() -> None:
    [(topic, value, key)] = records_of(event("task_run.completed", {"id": "j"}, None))
    assert (topic, key) == (SYSTEM_EVENTS_TOPIC, b"s/1")
    assert orjson.loads(value or b"") == {
        "id": "01KBX0000000000000000000AA", "type": "task_run.completed", "flow_id": None,
        "subject": "s/1", "data": {"id": "j"}, "reason": "why",
        "occurred_at": "2026-12-05T18:00:00.123Z",
    }  # fmt: skip


def test_a_flow_event_is_also_the_registry_record_and_a_deletion_its_tombstone() -> None:
    flow = make_flow("f", URL)
    definition = flow.model_dump(mode="json")
    records = list(records_of(event("flow.updated", definition)))
    assert [(t, k) for t, _, k in records] == [(SYSTEM_EVENTS_TOPIC, b"s/1"), (FLOWS_TOPIC, b"f")]
    registry_record = orjson.loads(records[1][1] or b"")
    assert registry_record["definition"] == definition
    assert registry_record["checksum"] == checksum(flow) == flow_checksum(definition)
    assert (registry_record["type"], registry_record["version"]) == ("flow.updated", 1)

    deleted = list(records_of(event("flow.deleted", definition)))
    assert deleted[1] == (FLOWS_TOPIC, None, b"f")


def test_a_flow_event_without_a_runnable_definition_leaves_the_registry_alone() -> None:
    """An event another writer made with part of a flow: published, but the registry keeps
    the definition the workers run."""
    records = list(records_of(event("flow.updated", {"id": "f", "caps": []})))
    assert [t for t, _, _ in records] == [SYSTEM_EVENTS_TOPIC]


def test_a_destination_event_keeps_the_destinations_topic_record() -> None:
    data = {"key": "s3-x", "state": "active"}
    records = list(records_of(event("event_destination.activated", data)))
    topic, value, key = records[1]
    assert (topic, key) == (DESTINATIONS_TOPIC, b"f/s3-x")
    assert orjson.loads(value or b"") == {
        "id": "01KBX0000000000000000000AA", "type": "event_destination.activated",
        "flow_id": "f", "destination": "s3-x", "reason": "why",
        "at": "2026-12-05T18:00:00.123Z", "data": data,
    }  # fmt: skip


def _read_all(settings: Settings, topic: str) -> list[Any]:
    reader = TopicReader(settings, [(topic, 0)], "test")
    try:
        records, complete = reader.read_to_end(20.0)
    finally:
        reader.close()
    assert complete
    return records


def _ids_on_topic(settings: Settings, ids: set[str]) -> Counter[str]:
    bodies = [orjson.loads(r.value() or b"{}") for r in _read_all(settings, SYSTEM_EVENTS_TOPIC)]
    return Counter(b["id"] for b in bodies if b.get("id") in ids)


def _record(settings: Settings, type_: str, flow_id: str, data: dict[str, Any]) -> str:
    migrate_state(settings)
    with connect(settings) as conn, conn.transaction():
        return record_system_event(
            conn, type_, subject=f"flows/{flow_id}", data=data, flow_id=flow_id
        ).id


def _registry_flow_ids(settings: Settings) -> set[str]:
    registry = FlowRegistry(settings)
    try:
        registry.refresh()
        return {f.id for f in registry.flows()}
    finally:
        registry.close()


@pytest.mark.stack
def test_kafka_away_nothing_is_half_published_and_the_next_pass_publishes_all(
    stack: Settings, unique_id: str
) -> None:
    settings = stack.model_copy(update={"db_schema": unique_id})
    definition = make_flow(unique_id, URL).model_dump(mode="json")
    event_id = _record(settings, "flow.created", unique_id, definition)
    away = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})

    with pytest.raises(OutboxUnpublishedError):
        OutboxRelay(away, timeout=2.0).publish_pending()

    assert _ids_on_topic(settings, {event_id}) == Counter()
    assert unique_id not in _registry_flow_ids(settings)  # neither the history nor the registry
    assert OutboxRelay(settings).publish_pending() == 1
    assert _ids_on_topic(settings, {event_id}) == Counter({event_id: 1})
    assert unique_id in _registry_flow_ids(settings)  # both, in one transaction
    _record(settings, "flow.deleted", unique_id, definition)  # leave the shared registry clean
    assert OutboxRelay(settings).publish_pending() == 1
    assert unique_id not in _registry_flow_ids(settings)


@pytest.mark.stack
def test_a_crash_after_the_kafka_commit_repeats_the_event_under_its_id_never_loses_it(
    stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At least once: the relay died between Kafka's commit and Postgres' stamp. The next
    pass publishes the event again, with the same id (the dedupe key); Postgres, which
    ``GET /system-events`` reads, holds it once."""
    settings = stack.model_copy(update={"db_schema": unique_id})
    event_id = _record(settings, "task_run.completed", unique_id, {"id": "job"})

    def crash(*_: object) -> None:
        raise SystemExit("killed between the Kafka commit and the stamp")

    monkeypatch.setattr("engine.runtime.outbox_relay.mark_published", crash)
    with pytest.raises(SystemExit):
        OutboxRelay(settings).publish_pending()
    monkeypatch.undo()
    assert _ids_on_topic(settings, {event_id}) == Counter({event_id: 1})

    assert OutboxRelay(settings).publish_pending() == 1
    assert _ids_on_topic(settings, {event_id}) == Counter({event_id: 2})
    with connect(settings) as conn:
        assert [e.id for e in outbox.published_events(conn)] == [event_id]


@pytest.mark.stack
def test_a_publish_returns_only_once_read_committed_readers_can_see_it(
    stack: Settings, unique_id: str
) -> None:
    """A transaction's commit returns before its commit markers reach the partitions, so
    the relay waits for the last stable offset to pass what it wrote. Held back here by a
    transaction another producer leaves open on the partition: the wait ends only after
    that transaction commits (a relay that did not wait returns at once)."""
    topic = f"leadflow.{unique_id}.relay-visibility"
    ensure_topics(new_admin(stack), [TopicSpec(topic, 1, 1)])
    other = new_transactional_producer(stack, f"{unique_id}.other")
    other.init_transactions(10)
    other.begin_transaction()
    other.produce(topic, b"held", b"k")
    other.flush(10)
    offsets: list[int] = []
    mine = new_producer(stack)
    mine.produce(
        topic, b"mine", b"k", on_delivery=lambda _err, msg: offsets.append(msg.offset() or 0)
    )
    mine.flush(10)
    relay = OutboxRelay(stack, timeout=30.0)
    readable = threading.Event()

    def wait() -> None:
        relay._await_readable({(topic, 0): offsets[0]})  # the step under test
        readable.set()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    # Not while the open transaction holds the last stable offset below the record.
    assert not readable.wait(1.0)
    other.commit_transaction(10)
    assert readable.wait(25), "the wait did not end once the record became readable"
    waiter.join(5)
