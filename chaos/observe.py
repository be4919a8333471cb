"""Reading back what a run left behind: the flow's topics, Postgres, both stores, the
dead-letter topic, and the consumer groups' positions."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from psycopg import sql

from engine.destinations import Destination
from engine.flows import Flow
from engine.runtime.kafka import consumer_config
from engine.runtime.step_worker import step_group
from engine.settings import Settings
from engine.topics import dlq_topic, flow_event_topics, input_topic
from projectors.projector import consumer_group
from schemas.codec import EventCodec, SchemaMismatchError
from streamers import layout
from streamers.destinations import open_store
from streamers.readback import read_events
from streamers.worker import consumer_group_id

READER_GROUP = "leadflow-chaos-reader"


def _partitions(consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
    metadata = consumer.list_topics(timeout=15).topics
    return [TopicPartition(t, p) for t in topics for p in metadata[t].partitions]


def read_topics(settings: Settings, topics: list[str], timeout: float = 60) -> list[bytes]:
    """Every committed record's value, from the beginning to the current end."""
    consumer = Consumer(consumer_config(settings, READER_GROUP))
    try:
        parts = _partitions(consumer, topics)
        ends = {}
        for tp in parts:
            _, high = consumer.get_watermark_offsets(tp, timeout=15, cached=False)
            ends[(tp.topic, tp.partition)] = high
        consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in parts])
        pending = {k for k, high in ends.items() if high > 0}
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                values.append(msg.value() or b"")
            # Transaction markers are not delivered: done once the position reaches the end.
            for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    pending.discard((tp.topic, tp.partition))
        if pending:
            raise TimeoutError(f"could not read {len(pending)} partitions to their end")
        return values
    finally:
        consumer.close()


def topic_events(settings: Settings, flow: Flow) -> list[tuple[str, str]]:
    """(id, type) of every event on the flow's events topics (poison records aside)."""
    codec = EventCodec()
    out = []
    for value in read_topics(settings, flow_event_topics(flow)):
        try:
            event = codec.decode(value)
        except (SchemaMismatchError, ValueError):
            continue  # the poison the run planted: checked on the dead-letter topic
        out.append((event["id"], event["type"]))
    return out


def dead_letters(settings: Settings, flow: Flow) -> list[bytes]:
    return read_topics(settings, [dlq_topic(flow.id)])


def postgres_events(settings: Settings, flow: Flow) -> list[tuple[str, str, str]]:
    """(id, lead id, type) of the flow's rows in the timeline projection (the serving view)."""
    query = sql.SQL("SELECT id, lead_id, type FROM {}.events WHERE flow_id = %s").format(
        sql.Identifier(settings.db_schema)
    )
    with psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=10) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(query, (flow.id,)).fetchall()]


def projector_rejects(settings: Settings) -> list[dict[str, Any]]:
    """Records the timeline projector refused (poison, or events Postgres cannot hold), with
    why and their bytes: where an event is missing from Postgres, this says what happened to
    it."""
    with psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=10) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT table_schema FROM information_schema.tables"
                " WHERE table_name = 'projector_rejects' AND table_schema LIKE %s",
                (f"{settings.db_schema}_timeline_%",),
            ).fetchall()
        ]
        out = []
        for schema in schemas:
            rows = conn.execute(
                sql.SQL(
                    "SELECT kafka_topic, kafka_partition, kafka_offset, error, raw"
                    " FROM {}.projector_rejects ORDER BY 1, 2, 3"
                ).format(sql.Identifier(schema))
            ).fetchall()
            out += [
                {
                    "topic": r[0],
                    "partition": r[1],
                    "offset": r[2],
                    "error": r[3][:200],
                    "raw": bytes(r[4] or b""),
                }
                for r in rows
            ]
        return out


def store_events(settings: Settings, destination: Destination) -> tuple[list[tuple[str, str]], int]:
    """(id, type) of every event object in the destination, and how many dead letters it holds."""
    store = open_store(destination, settings)
    try:
        events = [(e["id"], e["type"]) for e in read_events(store, destination.prefix)]
        keys = store.list_keys(layout.directory(destination.prefix))
        dead = sum(1 for k in keys if layout.is_dead_letter_key(destination.prefix, k))
        return events, dead
    finally:
        store.close()


def consumer_groups(flow: Flow, settings: Settings) -> dict[str, list[str]]:
    """Every group the run's workers consume in, with the topics it reads."""
    groups = {step_group(flow.id, s.id): [input_topic(flow, s.id)] for s in flow.steps}
    events = flow_event_topics(flow)
    for destination in flow.destinations:
        groups[consumer_group_id(flow.id, destination)] = events
    groups[consumer_group(settings.projector_name, settings.db_schema)] = events
    return groups


def committed_offsets(settings: Settings, flow: Flow) -> dict[str, int]:
    """Per group, the sum of its committed offsets over the partitions it reads: it grows
    whenever the group gets on, so while a run settles it tells moving from stuck."""
    out: dict[str, int] = {}
    reader = Consumer(consumer_config(settings, READER_GROUP))
    try:
        for group, topics in consumer_groups(flow, settings).items():
            parts = _partitions(reader, topics)
            probe = Consumer(consumer_config(settings, group))
            try:
                committed = probe.committed(parts, timeout=15)
            finally:
                probe.close()
            out[group] = sum(max(tp.offset, 0) for tp in committed)
    finally:
        reader.close()
    return out


def group_lag(settings: Settings, flow: Flow) -> dict[str, int]:
    """Per group, the committed records it has not consumed yet.

    Not ``end - committed``: a partition written in transactions ends with a commit
    marker no consumer ever receives, and the projector mirrors its checkpoint (the
    offset after its last *record*) to its group, one short of such an end. So where the
    committed offset is short of the end, the records in between are read and counted."""
    lag: dict[str, int] = defaultdict(int)
    reader = Consumer(consumer_config(settings, READER_GROUP))
    try:
        for group, topics in consumer_groups(flow, settings).items():
            parts = _partitions(reader, topics)
            probe = Consumer(consumer_config(settings, group))
            try:
                committed = probe.committed(parts, timeout=15)
            finally:
                probe.close()
            for tp in committed:
                _, high = reader.get_watermark_offsets(tp, timeout=15, cached=False)
                start = max(tp.offset, 0)
                if start < high:
                    lag[group] += _records_between(reader, tp.topic, tp.partition, start, high)
            lag.setdefault(group, 0)
    finally:
        reader.close()
    return dict(lag)


def _records_between(reader: Consumer, topic: str, partition: int, start: int, end: int) -> int:
    reader.assign([TopicPartition(topic, partition, start)])
    count = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for msg in reader.consume(500, timeout=0.3):
            err = msg.error()
            if err is None and (msg.offset() or 0) < end:
                count += 1
            elif err is not None and err.code() != KafkaError._PARTITION_EOF:
                continue
        (position,) = reader.position([TopicPartition(topic, partition)])
        if position.offset >= end:
            break
    reader.unassign()
    return count
