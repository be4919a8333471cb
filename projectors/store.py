"""The projection's Postgres side: connections, migrations, the one-transaction batch write.

Driver errors that mean "Postgres is not there right now" become
``StoreUnavailableError`` here, so nothing above this module imports psycopg
to decide whether to retry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import structlog
from psycopg import sql
from psycopg.types.json import set_json_loads

from engine.errors import ConfigError
from engine.pgmigrate import Migration, MigrationChangedError, apply_migrations
from engine.pgmigrate import load_migrations as load_files
from engine.settings import Settings
from projectors.batch import EVENT_COLUMNS, Batch
from projectors.errors import MigrationError, StoreUnavailableError

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


# -- migrations -------------------------------------------------------------------------


def load_migrations() -> list[Migration]:
    """The SQL files shipped in ``projectors/migrations``, in version order."""
    return load_files("projectors")


def migrate(
    conn: Connection, schema: str, migrations: Sequence[Migration] | None = None
) -> list[str]:
    """Create ``schema`` if needed and apply the migrations it lacks; returns their versions.

    Idempotent, and safe when several processes start at once: everything
    runs in one transaction holding an advisory lock for this schema, so the
    second process waits, then finds the work done. A migration changed after
    it was applied is refused rather than silently skipped. ``conn`` must not
    be inside a transaction (``connect`` gives an autocommit one).
    """
    schema = checked_schema(schema)
    wanted = list(load_migrations() if migrations is None else migrations)
    try:
        with translate_errors(), conn.transaction(), conn.cursor() as cur:
            done = apply_migrations(cur, schema, "schema_migrations", wanted)
    except MigrationChangedError as exc:
        raise MigrationError(str(exc)) from None
    if done:
        log.info("migrations applied", schema=schema, versions=done)
    return done


def migrate_database(settings: Settings) -> list[str]:
    """``migrate`` on ``settings.db_schema`` with a connection of its own (CLI, demo, workers)."""
    with connect(settings, application_name="leadflow-migrate") as conn:
        return migrate(conn, settings.db_schema)


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

_INSERT_EVENTS = sql.SQL(
    "INSERT INTO events ({columns}) SELECT {values} FROM events_stage ON CONFLICT (id) DO NOTHING"
).format(
    columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    values=sql.SQL(", ").join(
        sql.SQL("convert_from(snapshot, 'UTF8')::jsonb")
        if name == "snapshot"
        else sql.Identifier(name)
        for name in _COLUMNS
    ),
)

# Per lead in the batch: its newest event's state. The WHERE keeps the row
# from moving backwards when the batch holds only older events (a replay, or
# one topic read ahead of another). submitted_at comes from any event:
# end_timestamp - total_ms is the submission time.
_UPSERT_LEADS = """
INSERT INTO leads AS l (lead_id, flow_id, status, last_event_id, last_event_type, last_step_id,
                        cost, revenue, submitted_at, updated_at, completed)
SELECT lead_id,
       (array_agg(flow_id ORDER BY id DESC))[1],
       (array_agg(outcome ORDER BY id DESC))[1],
       max(id),
       (array_agg(type ORDER BY id DESC))[1],
       (array_agg(step_id ORDER BY id DESC))[1],
       (array_agg(cost ORDER BY id DESC) FILTER (WHERE cost IS NOT NULL))[1],
       (array_agg(revenue ORDER BY id DESC) FILTER (WHERE revenue IS NOT NULL))[1],
       min(to_timestamp((end_timestamp - total_ms) / 1000.0)),
       max(ts),
       bool_or(type = 'flow.completed')
FROM events_stage
GROUP BY lead_id
ON CONFLICT (lead_id) DO UPDATE SET
    flow_id = EXCLUDED.flow_id,
    status = EXCLUDED.status,
    last_event_id = EXCLUDED.last_event_id,
    last_event_type = EXCLUDED.last_event_type,
    last_step_id = EXCLUDED.last_step_id,
    cost = COALESCE(EXCLUDED.cost, l.cost),
    revenue = COALESCE(EXCLUDED.revenue, l.revenue),
    submitted_at = LEAST(l.submitted_at, EXCLUDED.submitted_at),
    updated_at = GREATEST(l.updated_at, EXCLUDED.updated_at),
    completed = l.completed OR EXCLUDED.completed
WHERE EXCLUDED.last_event_id > l.last_event_id
"""

_INSERT_REJECT = """
INSERT INTO projector_rejects
    (projector, kafka_topic, kafka_partition, kafka_offset, error, raw, key)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""

# GREATEST: a checkpoint never moves back, even when a member that lost its
# partitions in a rebalance commits a stale batch after the new owner.
_UPSERT_CHECKPOINTS = """
INSERT INTO projector_checkpoints AS c (projector, topic, partition, next_offset, updated_at)
SELECT %s, topic, partition, next_offset, now()
FROM unnest(%s::text[], %s::int4[], %s::int8[]) AS n(topic, partition, next_offset)
ON CONFLICT (projector, topic, partition) DO UPDATE SET
    next_offset = GREATEST(c.next_offset, EXCLUDED.next_offset),
    updated_at = EXCLUDED.updated_at
"""


def write_batch(conn: Connection, projector: str, batch: Batch) -> int:
    """Write a batch and ``projector``'s checkpoints in one transaction; returns events inserted.

    Writing the same batch again inserts nothing and changes nothing: events
    are keyed by id, leads only move forward, checkpoints only grow. That is
    what makes a retry after an unknown commit outcome safe.
    """
    inserted = 0
    with translate_errors(), conn.transaction(), conn.cursor() as cur:
        if batch.events:
            cur.execute(_CREATE_STAGE)
            with cur.copy(_COPY_STAGE) as copy:
                copy.set_types(_COPY_TYPES)
                for row in batch.events:
                    copy.write_row(row)
            cur.execute(_INSERT_EVENTS)
            inserted = cur.rowcount
            cur.execute(_UPSERT_LEADS)
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
            keys = list(batch.next_offsets)
            cur.execute(
                _UPSERT_CHECKPOINTS,
                (
                    projector,
                    [topic for topic, _ in keys],
                    [partition for _, partition in keys],
                    [batch.next_offsets[k] for k in keys],
                ),
            )
    return inserted


def load_checkpoints(
    conn: Connection, projector: str, topics: Sequence[str]
) -> dict[tuple[str, int], int]:
    """``projector``'s next offset per (topic, partition) of ``topics``; absent = never written."""
    with translate_errors():
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM projector_checkpoints"
            " WHERE projector = %s AND topic = ANY(%s)",
            (projector, list(topics)),
        ).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}
