"""The projector on real Kafka and Postgres: every event once, resumes from its own checkpoint."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from engine.events import StepIdentity, Timing, stamp_events
from engine.ids import new_lead_id
from engine.runtime.kafka.config import admin_config
from engine.settings import Settings
from engine.steps.base import EventDraft
from projectors.batch import Record, build_batch
from projectors.projector import TimelineProjector, consumer_group
from projectors.queries import count_completed, lead_timeline
from projectors.store import Connection
from projectors.writing import write_batch
from schemas.codec import EventCodec, event_to_json_dict
from tests.projectors.support import (
    CODEC,
    checkpoints,
    create_source_topic,
    event_ids,
    flow_pattern,
    high_watermarks,
    lead_events,
    produce,
    produce_raw,
    running,
    scalar,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

GARBAGE = b"definitely not an avro event"


def as_stored(event: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(
        orjson.dumps(event_to_json_dict(CODEC.decode(CODEC.encode(event))))
    )
    return parsed


def projector_for(settings: Settings, flow_id: str, **options: Any) -> TimelineProjector:
    return TimelineProjector(settings, flow_pattern(flow_id), f"timeline-{flow_id}", **options)


def test_every_event_lands_once_in_timeline_order_garbage_is_rejected_and_checkpointed(
    pg_settings: Settings, db: Connection, unique_id: str
) -> None:
    topic = create_source_topic(pg_settings, unique_id)
    events = lead_events(unique_id, leads=40)
    produce(pg_settings, topic, events[:100])
    produce_raw(pg_settings, topic, GARBAGE, b"garbage-key")
    produce(pg_settings, topic, events[100:])
    projector = projector_for(pg_settings, unique_id)

    with running(projector):
        wait_until(
            lambda: (
                scalar(db, "SELECT count(*) FROM events") == len(events)
                and scalar(db, "SELECT count(*) FROM projector_rejects") == 1
            ),
            20,
            "every event and the garbage in Postgres",
        )

    for lead_id in {e["lead_id"] for e in events}:
        expected = [as_stored(e) for e in events if e["lead_id"] == lead_id]
        assert lead_timeline(db, lead_id) == expected
    assert event_ids(db) == sorted(e["id"] for e in events)
    assert count_completed(db, unique_id) == 40
    [(raw, key, error)] = db.execute("SELECT raw, key, error FROM projector_rejects").fetchall()
    assert (raw, key) == (GARBAGE, b"garbage-key")
    assert error.startswith("SchemaMismatchError")
    assert checkpoints(db, projector.name) == high_watermarks(pg_settings, topic)
    assert projector.stats.records == len(events) + 1


def test_a_restarted_projector_resumes_from_its_checkpoint_not_the_group_offsets(
    pg_settings: Settings, db: Connection, unique_id: str
) -> None:
    topic = create_source_topic(pg_settings, unique_id)
    first, later = lead_events(unique_id, leads=20), lead_events(unique_id, leads=6)
    produce(pg_settings, topic, first)
    with running(projector_for(pg_settings, unique_id)):
        wait_until(lambda: scalar(db, "SELECT count(*) FROM events") == len(first), 20, "run 1")
    # Someone rewinds the consumer group: a projector that trusted it would re-read everything.
    admin = AdminClient(admin_config(pg_settings))
    rewind = [TopicPartition(topic, p, 0) for _, p in high_watermarks(pg_settings, topic)]
    group = consumer_group(f"timeline-{unique_id}", pg_settings.db_schema)
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, rewind)])[group].result(
        10
    )
    produce(pg_settings, topic, later)

    second = projector_for(pg_settings, unique_id)
    with running(second):
        wait_until(
            lambda: scalar(db, "SELECT count(*) FROM events") == len(first) + len(later),
            20,
            "run 2",
        )

    assert (second.stats.records, second.stats.inserted) == (len(later), len(later))
    assert event_ids(db) == sorted(e["id"] for e in first + later)
    assert checkpoints(db, second.name) == high_watermarks(pg_settings, topic)


def test_a_dropped_postgres_connection_is_reopened_and_nothing_is_skipped(
    pg_settings: Settings, db: Connection, unique_id: str
) -> None:
    topic = create_source_topic(pg_settings, unique_id)
    before, after = lead_events(unique_id, leads=10), lead_events(unique_id, leads=10)
    projector = projector_for(pg_settings, unique_id)
    produce(pg_settings, topic, before)

    with running(projector):
        wait_until(lambda: scalar(db, "SELECT count(*) FROM events") == len(before), 20, "before")
        terminated = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"leadflow-projector-{projector.name}",),
        ).fetchall()
        assert terminated == [(True,)]
        produce(pg_settings, topic, after)
        wait_until(
            lambda: scalar(db, "SELECT count(*) FROM events") == len(before) + len(after),
            20,
            "after",
        )

    assert projector.stats.store_retries >= 1
    assert event_ids(db) == sorted(e["id"] for e in before + after)
    assert checkpoints(db, projector.name) == high_watermarks(pg_settings, topic)


def test_two_projectors_of_one_name_share_the_partitions_and_write_each_event_once(
    pg_settings: Settings, db: Connection, unique_id: str
) -> None:
    topic = create_source_topic(pg_settings, unique_id, partitions=4)
    waves = [lead_events(unique_id, leads=20) for _ in range(3)]
    a, b = projector_for(pg_settings, unique_id), projector_for(pg_settings, unique_id)

    def projected(n: int) -> bool:
        return scalar(db, "SELECT count(*) FROM events") == n

    every = set(high_watermarks(pg_settings, topic))
    produce(pg_settings, topic, waves[0])
    with running(a):
        wait_until(lambda: projected(100), 20, "wave 1 by the first projector")
        with running(b):
            wait_until(lambda: a.assigned | b.assigned == every and bool(b.assigned), 20, "split")
            assert not a.assigned & b.assigned
            produce(pg_settings, topic, waves[1])
            wait_until(lambda: projected(200), 20, "wave 2 by both")
        wait_until(lambda: a.assigned == every, 20, "b's partitions back to a")
        produce(pg_settings, topic, waves[2])
        wait_until(lambda: projected(300), 20, "wave 3 by the first projector")

    assert b.stats.inserted > 0
    assert a.stats.inserted + b.stats.inserted == 300
    assert event_ids(db) == sorted(e["id"] for wave in waves for e in wave)
    assert checkpoints(db, a.name) == high_watermarks(pg_settings, topic)


def test_while_postgres_is_unreachable_it_retries_and_still_stops_when_asked(
    pg_settings: Settings, unique_id: str
) -> None:
    nowhere = SecretStr("postgresql://leadflow:leadflow@127.0.0.1:1/leadflow")
    projector = projector_for(pg_settings.model_copy(update={"database_url": nowhere}), unique_id)
    stop = threading.Event()
    worker = threading.Thread(target=projector.run, args=(stop,))
    worker.start()
    wait_until(lambda: projector.stats.store_retries >= 2, 10, "retries")

    stop.set()
    worker.join(5)

    assert not worker.is_alive()
    assert projector.stats.records == 0


def test_a_leads_cost_is_the_sources_then_the_total_never_one_lookups_price(
    db: Connection,
) -> None:
    submitted_ms = 1_764_000_000_000
    lead_id = new_lead_id(submitted_ms)
    steps = [
        [EventDraft("source.accepted", "success", cost=2.5)],
        [EventDraft("enhancement.success", "success", cost=0.25)],
        [EventDraft("flow.completed", "success", cost=2.75)],
    ]
    events = []
    for index, drafts in enumerate(steps):
        who = StepIdentity("costs", 1, f"s{index}", f"S{index}", index, "h", "0.1.0")
        at = submitted_ms + 10 * index
        events += stamp_events(drafts, who, lead_id, submitted_ms, {}, Timing(at, at + 1, 0))
    codec = EventCodec()

    def cost_after(upto: int) -> float:
        records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(events[:upto])]
        write_batch(db, "test", build_batch(codec, records))
        row = db.execute("SELECT cost FROM leads WHERE lead_id = %s", (lead_id,)).fetchone()
        assert row is not None
        return float(row[0])

    assert cost_after(2) == 2.5  # the enhancement's 0.25 is that lookup's, not the lead's
    assert cost_after(3) == 2.75
