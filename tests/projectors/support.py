"""Helpers for projector tests on the real broker: a topic of one's own, producing, reading back."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine.runtime.kafka.config import admin_config, consumer_config, producer_config
from engine.runtime.kafka.topics import wait_for_leaders
from engine.settings import Settings
from engine.topics import events_topic
from projectors.projector import Projector
from projectors.store import Connection
from schemas.codec import EventCodec
from tests.factories import make_lead_events

CODEC = EventCodec()


def flow_pattern(flow_id: str) -> str:
    return rf"^leadflow\.{flow_id}\.events\..+$"


def create_source_topic(settings: Settings, flow_id: str, partitions: int = 3) -> str:
    """``leadflow.<flow_id>.events.source``, created and ready."""
    topic = events_topic(flow_id, "source")
    admin = AdminClient(admin_config(settings))
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    wait_for_leaders(admin, [topic])
    return topic


def lead_events(flow_id: str, leads: int) -> list[dict[str, Any]]:
    """``leads`` delivered leads' timelines, 5 events each, one lead after another."""
    return [e for _ in range(leads) for e in make_lead_events(flow_id=flow_id)]


def produce(
    settings: Settings,
    topic: str,
    events: Iterable[dict[str, Any]],
    producer: Producer | None = None,
) -> None:
    """Encoded events keyed by lead id, as the steps write them; flushed before returning."""
    producer = producer or Producer(producer_config(settings))
    for event in events:
        producer.produce(topic, CODEC.encode(event), event["lead_id"].encode())
    assert producer.flush(15) == 0


def produce_raw(settings: Settings, topic: str, value: bytes, key: bytes) -> None:
    producer = Producer(producer_config(settings))
    producer.produce(topic, value, key)
    assert producer.flush(15) == 0


def high_watermarks(settings: Settings, topic: str) -> dict[tuple[str, int], int]:
    consumer = Consumer(consumer_config(settings, "unused-watermark-reader"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def checkpoints(conn: Connection, projector: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM projector_checkpoints WHERE projector = %s",
        (projector,),
    ).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}


def event_ids(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id").fetchall()]


def scalar(conn: Connection, query: str) -> int:
    row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def running(projector: Projector) -> Iterator[Projector]:
    """``projector.run`` in a thread for the block; then stopped, joined, its error re-raised."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            projector.run(stop)
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"projector-{projector.name}")
    thread.start()
    try:
        yield projector
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "projector did not stop within 30 s"
    if errors:
        raise errors[0]
