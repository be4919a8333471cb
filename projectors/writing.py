"""Writing a batch into a projection's generation: its rows and the projector's checkpoints in
one Postgres transaction, guarded against a generation switched away meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from projectors.batch import Batch
from projectors.generations import Generation, current, guard
from projectors.projection import Projection
from projectors.projections import projection as projection_named
from projectors.store import Connection, translate_errors

# GREATEST: a checkpoint never moves back, even when a member that lost its
# partitions in a rebalance commits a stale batch after the new owner.
_UPSERT_CHECKPOINTS = """
INSERT INTO {table} AS c (projector, topic, partition, next_offset, updated_at)
SELECT %s, topic, partition, next_offset, now()
FROM unnest(%s::text[], %s::int4[], %s::int8[]) AS n(topic, partition, next_offset)
ON CONFLICT (projector, topic, partition) DO UPDATE SET
    next_offset = GREATEST(c.next_offset, EXCLUDED.next_offset),
    updated_at = EXCLUDED.updated_at
"""


_INSERT_REJECT = """
INSERT INTO projector_rejects
    (projector, kafka_topic, kafka_partition, kafka_offset, error, raw, key)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""


def write_batch(
    conn: Connection,
    projector: str,
    batch: Batch,
    generation: Generation | None = None,
    projection: Projection | None = None,
) -> int:
    """Write a batch and ``projector``'s checkpoints in one transaction; returns events new
    to the projection.

    Into ``generation`` (default: the active one of ``projection``, default the
    timeline), guarded so that a generation switched away meanwhile raises
    ``GenerationChangedError`` instead of being written. Writing the same
    batch again inserts nothing and changes nothing: each projection is
    idempotent per event id and checkpoints only grow. That is what makes a
    retry after an unknown commit outcome safe.
    """
    if generation is None:
        schema = conn.execute("SELECT current_schema()").fetchone()
        found = current(
            conn,
            str(schema[0]) if schema else "",
            (projection or projection_named("timeline")).name,
            "active",
        )
        if found is None:
            raise LookupError("no active generation: run leadflow db migrate")
        generation = found
    applies = (projection or projection_named(generation.projection)).apply
    inserted = 0
    with translate_errors(), conn.transaction(), conn.cursor() as cur:
        guard(cur, generation)
        cur.execute(
            sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(generation.schema))
        )
        if batch.events:
            inserted = applies(cur, batch)
        if batch.rejects:
            cur.executemany(
                _INSERT_REJECT,
                [
                    (projector, r.record.topic, r.record.partition, r.record.offset, r.error,
                     r.record.value, r.record.key)
                    for r in batch.rejects
                ],
            )  # fmt: skip
        if batch.next_offsets:
            write_checkpoints(cur, projector, batch.next_offsets)
    return inserted


def write_checkpoints(
    cur: psycopg.Cursor[Any],
    projector: str,
    offsets: dict[tuple[str, int], int],
    schema: str | None = None,
) -> None:
    """Upsert next offsets into ``projector_checkpoints`` of generation ``schema``
    (default: the one on the search path)."""
    table = (
        sql.Identifier(schema, "projector_checkpoints")
        if schema
        else sql.Identifier("projector_checkpoints")
    )
    keys = list(offsets)
    cur.execute(
        sql.SQL(_UPSERT_CHECKPOINTS).format(table=table),
        (
            projector,
            [topic for topic, _ in keys],
            [partition for _, partition in keys],
            [offsets[k] for k in keys],
        ),
    )


def load_checkpoints(
    conn: Connection, projector: str, topics: Sequence[str], schema: str | None = None
) -> dict[tuple[str, int], int]:
    """``projector``'s next offset per (topic, partition) of ``topics`` in generation
    ``schema`` (default: the active timeline's); absent = never written."""
    if schema is None:
        serving = conn.execute("SELECT current_schema()").fetchone()
        found = current(conn, str(serving[0]) if serving else "", "timeline", "active")
        if found is None:
            return {}
        schema = found.schema
    query = sql.SQL(
        "SELECT topic, partition, next_offset FROM {}.projector_checkpoints"
        " WHERE projector = %s AND topic = ANY(%s)"
    ).format(sql.Identifier(schema))
    with translate_errors():
        rows = conn.execute(query, (projector, list(topics))).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}
