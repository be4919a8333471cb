"""Reading back what a run left behind: the flow's topics, Postgres, both stores, the
dead-letter topic, and the consumer groups' positions."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.contract import directory
from engine.objects.destination import open_store
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.kafka.offsets import committed_offsets, lags, list_offsets
from engine.runtime.step_worker import step_group
from engine.settings import Settings
from engine.topics import dlq_topic, flow_event_topics, input_topic
from engine.transport import postgres_tls
from projectors.projector import consumer_group
from schemas.codec import EventCodec, SchemaMismatchError
from streamers import layout
from streamers.readback import read_events
from streamers.streamer import consumer_group_id


def _partitions(settings: Settings, topics: list[str]) -> list[tuple[str, int]]:
    metadata = new_admin(settings).list_topics(timeout=15).topics
    return [(t, p) for t in topics for p in metadata[t].partitions]


def read_topics(settings: Settings, topics: list[str], timeout: float = 60) -> list[bytes]:
    """Every committed record's value, from the beginning to the current end."""
    reader = TopicReader(settings, _partitions(settings, topics), "chaos")
    try:
        records, complete = reader.read_to_end(timeout)
    finally:
        reader.close()
    if not complete:
        raise TimeoutError(f"could not read {topics} to their end in {timeout:g} s")
    return [msg.value() or b"" for msg in records]


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
    with psycopg.connect(
        settings.database_url.get_secret_value(), **postgres_tls(settings), connect_timeout=10
    ) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(query, (flow.id,)).fetchall()]


def projector_rejects(settings: Settings) -> list[dict[str, Any]]:
    """Records the timeline projector refused (poison, or events Postgres cannot hold), with
    why and their bytes: where an event is missing from Postgres, this says what happened to
    it."""
    with psycopg.connect(
        settings.database_url.get_secret_value(), **postgres_tls(settings), connect_timeout=10
    ) as conn:
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
        keys = store.list_keys(directory(destination.prefix))
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


def group_progress(settings: Settings, flow: Flow) -> dict[str, int]:
    """Per group, the sum of its committed offsets over the partitions it reads: it grows
    whenever the group gets on, so while a run settles it tells moving from stuck."""
    admin = new_admin(settings)
    return {
        group: sum(committed_offsets(admin, group, _partitions(settings, topics)).values())
        for group, topics in consumer_groups(flow, settings).items()
    }


def group_lag(settings: Settings, flow: Flow) -> dict[str, int]:
    """Per group, the committed records it has not consumed yet, counted one by one (the
    Kafka kit's lag: transaction markers and a projector's checkpoint one short of such a
    marker are no lag); a partition a group never committed counts from its beginning."""
    admin = new_admin(settings)
    positions: dict[str, dict[tuple[str, int], int]] = {}
    for group, topics in consumer_groups(flow, settings).items():
        parts = _partitions(settings, topics)
        done = committed_offsets(admin, group, parts)
        positions[group] = {tp: done.get(tp, 0) for tp in parts}
    ends = list_offsets(admin, {tp for parts in positions.values() for tp in parts}, "latest")
    found = lags(settings, positions, ends, exact_up_to=2**62, timeout=60)
    return {group: sum(p.lag for p in parts) for group, parts in found.items()}
