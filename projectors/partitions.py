"""The timeline's daily partitions: made ahead of time, listed, and dropped once expired.

``events`` is partitioned by day on ``ts`` (migration timeline 007). Which days to make
and which to drop are ``engine.retention``'s decisions; this module does them in one
generation's schema. A partition is dropped by DETACH then DROP: detaching first takes
it out of every query at once, and the DROP that follows frees its files without the
DELETE and vacuum that row-by-row expiry would cost at 100M events a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import structlog
from psycopg import Cursor, sql

from engine.retention import DayPartition, partition_of, partitions_to_make
from projectors.store import Connection, translate_errors

log = structlog.get_logger(__name__)

_ENSURE = "SELECT ensure_event_partitions(%s::date[])"

# Every partition of ``events`` in the schema, with the planner's row estimate (reltuples)
# and size, read from the catalogue: no scan of the data. A partition never analyzed yet
# (reltuples -1: a young one) is counted instead.
_LIST = """
SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid),
       i.inhdetachpending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE p.relname = 'events' AND n.nspname = %s
ORDER BY c.relname
"""


@dataclass(frozen=True, slots=True)
class HeldPartition:
    """A partition as it stands: its day, estimated rows and bytes on disk."""

    partition: DayPartition
    rows: int
    bytes: int
    detach_pending: bool = False


def ensure_days(cur: Cursor[Any], days: Sequence[date]) -> int:
    """Make the partitions of ``days`` that do not exist yet, in the cursor's schema
    (its search_path); returns how many were made."""
    row = cur.execute(_ENSURE, (list(days),)).fetchone()
    return int(row[0]) if row else 0


def ensure_batch_days(cur: Cursor[Any]) -> int:
    """Make the partitions the staged batch (``events_stage``) needs: a late event from a
    day not made yet, or a clock ahead of the days made in advance. Usually none."""
    row = cur.execute(
        "SELECT ensure_event_partitions(ARRAY("
        "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM events_stage))"
    ).fetchone()
    return int(row[0]) if row else 0


def make_ahead(conn: Connection, schema: str, now: datetime) -> int:
    """Make yesterday's, today's and the next days' partitions in ``schema`` (the projector
    calls it at start and every hour), so batches rarely have to."""
    with translate_errors(), conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        made = ensure_days(cur, [p.day for p in partitions_to_make(now)])
    if made:
        log.info("timeline partitions made ahead", schema=schema, made=made)
    return made


def held_partitions(conn: Connection, schema: str) -> list[HeldPartition]:
    """The daily partitions of ``events`` in ``schema``, oldest first."""
    with translate_errors():
        rows = conn.execute(_LIST, (schema,)).fetchall()
    held = []
    for name, rows_estimate, size, pending in rows:
        day = partition_of(str(name))
        if day is not None:
            count = rows_estimate if rows_estimate >= 0 else _count(conn, schema, day.name)
            held.append(HeldPartition(day, int(count), int(size), bool(pending)))
    return sorted(held, key=lambda h: h.partition.day)


def _count(conn: Connection, schema: str, table: str) -> int:
    with translate_errors():
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
    return int(row[0]) if row else 0


def drop_partition(conn: Connection, schema: str, held: HeldPartition) -> None:
    """Detach ``held`` from ``events`` and drop it. CONCURRENTLY: readers and the projector
    go on meanwhile (a plain DETACH locks the whole table); it cannot run in a transaction,
    so ``conn`` must be autocommit (``store.connect``'s are). A detach interrupted half
    way is left pending; the next run finishes it (FINALIZE) before the DROP."""
    parent = sql.Identifier(schema, "events")
    table = sql.Identifier(schema, held.partition.name)
    how = sql.SQL("FINALIZE" if held.detach_pending else "CONCURRENTLY")
    with translate_errors():
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(parent, table, how))
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
    log.info("timeline partition dropped", schema=schema, partition=held.partition.name)
