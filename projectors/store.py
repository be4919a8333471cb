"""The projections' Postgres side: connections, staging, the one-transaction batch write.

Driver errors that mean "Postgres is not there right now" become
``StoreUnavailableError`` here, so nothing above this module imports psycopg
to decide whether to retry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
import structlog
from psycopg import sql
from psycopg.types.json import set_json_loads

from engine.errors import ConfigError
from engine.settings import Settings
from projectors.batch import EVENT_COLUMNS, Batch
from projectors.errors import StoreUnavailableError

if TYPE_CHECKING:
    from projectors.generations import Generation
    from projectors.projections import Projection

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[tuple[Any, ...]]

# Lower case only: the schema goes unquoted into search_path, where Postgres
# folds case, and quoted into CREATE SCHEMA; both must name the same schema.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn lost connections, restarts and other transient server errors into ours.

    psycopg's OperationalError covers a refused or dropped connection, an
    administrator shutdown and deadlocks: all worth a retry. Anything else
    (bad SQL, bad data) is a bug and propagates as it is.
    """
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailableError(f"postgres unavailable: {exc}") from exc


def checked_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"db_schema {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


def connect(settings: Settings, *, application_name: str = "leadflow") -> Connection:
    """An autocommit connection whose search_path is ``settings.db_schema``.

    Autocommit so that read-only callers (CLI, demo polling) never sit idle in
    a transaction; writers open explicit ones with ``conn.transaction()``.
    """
    schema = checked_schema(settings.db_schema)
    with translate_errors():
        conn = psycopg.connect(
            settings.database_url.get_secret_value(),
            autocommit=True,
            application_name=application_name,
            connect_timeout=5,
            options=f"-c search_path={schema}",
        )
    set_json_loads(orjson.loads, conn)
    return conn


# -- the batch write ---------------------------------------------------------------------

_COLUMNS = [name for name, _ in EVENT_COLUMNS]
_COPY_TYPES = [pg_type for _, pg_type in EVENT_COLUMNS]

# Per session, emptied at every commit: the COPY target, since COPY itself
# cannot do ON CONFLICT. Named apart from ``events``, as pg_temp comes first in
# the search path.
_CREATE_STAGE = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS events_stage ({}) ON COMMIT DELETE ROWS"
).format(
    sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type))
        for name, pg_type in EVENT_COLUMNS
    )
)

_COPY_STAGE = sql.SQL("COPY events_stage ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
)

_INSERT_REJECT = """
INSERT INTO projector_rejects
    (projector, kafka_topic, kafka_partition, kafka_offset, error, raw, key)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""

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


def stage_events(cur: psycopg.Cursor[Any], batch: Batch) -> None:
    """COPY the batch's event rows into the session's ``events_stage`` (emptied at commit)."""
    cur.execute(_CREATE_STAGE)
    # Empty already, unless an earlier batch of the same outer transaction
    # (a rebuild's final drain, written in savepoints) staged rows.
    cur.execute("DELETE FROM events_stage")
    with cur.copy(_COPY_STAGE) as copy:
        copy.set_types(_COPY_TYPES)
        for row in batch.events:
            copy.write_row(row)


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
    from projectors.generations import current, guard
    from projectors.projections import projection as named

    if generation is None:
        schema = conn.execute("SELECT current_schema()").fetchone()
        found = current(
            conn, str(schema[0]) if schema else "", (projection or named("timeline")).name, "active"
        )
        if found is None:
            raise LookupError("no active generation: run leadflow db migrate")
        generation = found
    applies = (projection or named(generation.projection)).apply
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
        from projectors.generations import current

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
