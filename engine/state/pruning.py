"""Pruning the engine's state tables by their own windows, in batches.

Each table's rows stop mattering at a different time, none of them the wall clock's
whim: a cap window's counter and ledger once the window has ended (and a grace for a
lead still in flight); a fingerprint once it is older than its flow's duplicate window;
a ping a day after its offer expired; an idempotency key once its lead has expired (the
flow's retention). Deleting in batches of ``batch`` rows, each its own transaction,
keeps every lock short while workers go on writing; each batch finds its rows through
an index (state migration 003).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import structlog
from psycopg import sql

from engine.flows import Flow
from engine.retention import cutoff, longest_retention_ms
from engine.state.errors import StateUnavailableError
from engine.state.postgres import Connection

log = structlog.get_logger(__name__)

# A cap window's rows stay this long after it ends, and a fingerprint this long past its
# flow's window: a lead still retrying days after submission counts in its own window.
STATE_GRACE = timedelta(days=7)
# An expired ping is answered "expired" (not "unknown") for a day.
PING_GRACE = timedelta(days=1)
DEFAULT_BATCH = 5000


@dataclass(frozen=True, slots=True)
class PruneTarget:
    """Rows of ``table`` that have expired: ``condition`` (with ``params``) selects them,
    ``age`` is the column that says how old a row is (for the oldest one held)."""

    table: str
    label: str
    age: str
    condition: str
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class TableState:
    """A state table as it stands: rows, the oldest row's age, rows now expired."""

    table: str
    label: str
    rows: int
    oldest: datetime | None
    expired: int


def prune_targets(flows: Sequence[Flow], now: datetime) -> list[PruneTarget]:
    """What each state table would lose at ``now`` for these ``flows`` (flows no longer
    applied are held to the longest retention of those that are)."""
    longest = cutoff(now, longest_retention_ms(flows))
    window_of = {
        f.id: timedelta(days=getattr(f.steps[0].settings, "duplicate_window_days", None) or 0)
        for f in flows
    }
    # A flow without a duplicate window keeps no fingerprints it needs: its retention.
    fingerprint_cuts = [
        (
            f.id,
            _ms(now - (window_of[f.id] + STATE_GRACE))
            if window_of[f.id]
            else _ms(cutoff(now, f.retention_ms)),
        )
        for f in flows
    ]
    flow_ids = [f.id for f in flows]
    return [
        PruneTarget(
            "engine_cap_ledger",
            "caps: leads counted in ended windows",
            "reserved_at",
            "(cap_key, window_start) IN (SELECT cap_key, window_start FROM engine_cap_counters"
            " WHERE window_end < %s)",
            (now - STATE_GRACE,),
        ),
        PruneTarget(
            "engine_cap_counters",
            "caps: ended windows",
            "window_end",
            "window_end < %s",
            (now - STATE_GRACE,),
        ),
        PruneTarget(
            "engine_intake_pings",
            "intake: expired pings",
            "created_at",
            "expires_at < %s",
            (now - PING_GRACE,),
        ),
        PruneTarget(
            "engine_intake_requests",
            "intake: idempotency keys of expired leads",
            "created_at",
            "created_at < CASE flow_id "
            + " ".join("WHEN %s THEN %s::timestamptz" for _ in flows)
            + " ELSE %s::timestamptz END"
            if flows
            else "created_at < %s",
            (*[v for f in flows for v in (f.id, cutoff(now, f.retention_ms))], longest),
        ),
        PruneTarget(
            "engine_lead_fingerprints",
            "duplicates: fingerprints past the duplicate window",
            "to_timestamp(submitted_ms / 1000.0)",
            " OR ".join(["(flow_id = %s AND submitted_ms < %s)"] * len(fingerprint_cuts))
            + (" OR " if fingerprint_cuts else "")
            + "(flow_id <> ALL(%s) AND submitted_ms < %s)",
            (*[v for cut in fingerprint_cuts for v in cut], flow_ids, _ms(longest)),
        ),
    ]


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def table_states(conn: Connection, targets: Sequence[PruneTarget]) -> list[TableState]:
    """How many rows each target's table holds, its oldest, and how many have expired."""
    states = []
    try:
        for t in targets:
            if not _exists(conn, t.table):
                continue
            table = sql.Identifier(t.table)
            row = conn.execute(
                sql.SQL("SELECT count(*), min({}) FROM {}").format(sql.SQL(t.age), table)
            ).fetchone()
            expired = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, sql.SQL(t.condition)),
                t.params,
            ).fetchone()
            states.append(
                TableState(
                    t.table,
                    t.label,
                    int(row[0]) if row else 0,
                    row[1] if row else None,
                    int(expired[0]) if expired else 0,
                )
            )
    except psycopg.OperationalError as exc:
        raise StateUnavailableError(f"state store unreachable: {exc}") from exc
    return states


def prune(conn: Connection, target: PruneTarget, batch: int = DEFAULT_BATCH) -> int:
    """Delete ``target``'s expired rows, ``batch`` at a time (each batch committed on its
    own); returns how many went."""
    if not _exists(conn, target.table):
        return 0
    table = sql.Identifier(target.table)
    # ctid: the batch's rows by their physical address, found once through the index.
    delete = sql.SQL(
        "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {c} LIMIT %s))"
    ).format(t=table, c=sql.SQL(target.condition))
    removed = 0
    try:
        while True:
            cur = conn.execute(delete, (*target.params, batch))
            removed += cur.rowcount
            if cur.rowcount < batch:
                break
    except psycopg.OperationalError as exc:
        raise StateUnavailableError(f"state store unreachable: {exc}") from exc
    if removed:
        log.info("state pruned", table=target.table, rows=removed)
    return removed


def _exists(conn: Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])
