"""Expiry of the projections: the timeline's partitions and the analytics' days.

In every live generation (the active one, and one being rebuilt): the timeline drops
the daily partitions whose events have all expired for the longest retention of the
flows (``projectors.partitions``), then deletes, in batches, the events of flows that
keep theirs for less (``events (flow_id, ts)``), the ids of the dropped events and the
leads with no event left. The
analytics deletes each flow's rollup days once expired for that flow, and the record of
counted events by day. ``dry_run`` reports the same figures without removing anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import structlog
from psycopg import sql

from engine.flows import Flow
from engine.retention import (
    Holding,
    cutoff,
    last_expired_day,
    longest_retention_ms,
    partitions_to_drop,
)
from projectors.generations import generations
from projectors.partitions import drop_partition, held_partitions
from projectors.store import Connection, translate_errors

log = structlog.get_logger(__name__)

BATCH = 5000
_LIVE = ("active", "building")
_DELETE_BY_KEY = "DELETE FROM {t} WHERE (id, ts) IN (SELECT id, ts FROM {t} WHERE {w} LIMIT %s)"
_DELETE_BY_CTID = "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {w} LIMIT %s))"


def expire_timeline(
    conn: Connection, serving: str, flows: Sequence[Flow], now: datetime, *, dry_run: bool
) -> list[Holding]:
    """What the timeline holds and what expires at ``now``; removed unless ``dry_run``."""
    longest = longest_retention_ms(flows)
    out: list[Holding] = []
    for gen in generations(conn, serving, "timeline"):
        if gen.state not in _LIVE:
            continue
        held = held_partitions(conn, gen.schema)
        doomed = partitions_to_drop([h.partition for h in held], now, longest)
        gone = {p.name for p in doomed}
        for h in held:
            removed = 0
            if h.partition.name in gone and not dry_run:
                drop_partition(conn, gen.schema, h)
                removed = h.rows
            out.append(
                Holding(
                    f"timeline {gen.schema}",
                    f"partition {h.partition.name}",
                    h.rows,
                    "rows (estimate)",
                    h.partition.start if h.rows else None,
                    h.rows if h.partition.name in gone else 0,
                    "detach + drop partition",
                    removed,
                )
            )
        kept = [h.partition.start for h in held if h.partition.name not in gone]
        # A lead whose latest event is older than every partition kept has no event left.
        edge = min(kept) if kept else cutoff(now, longest)
        out += _shorter_flows(conn, gen.schema, flows, longest, now, dry_run=dry_run)
        # The ids of the dropped events: a copy of one replayed now is as expired as it.
        out.append(
            _batched(
                conn,
                gen.schema,
                Holding(
                    f"timeline {gen.schema}", "event_ids", 0, "ids", None, 0, "delete in batches"
                ),
                "event_ids",
                "ts",
                "ts < %s",
                (edge,),
                dry_run=dry_run,
            )
        )
        out.append(
            _batched(
                conn,
                gen.schema,
                Holding(
                    f"timeline {gen.schema}", "leads", 0, "leads", None, 0, "delete in batches"
                ),
                "leads",
                "updated_at",
                "updated_at < %s",
                (edge,),
                dry_run=dry_run,
            )
        )
    return out


def _shorter_flows(
    conn: Connection,
    schema: str,
    flows: Sequence[Flow],
    longest: int,
    now: datetime,
    *,
    dry_run: bool,
) -> list[Holding]:
    """Flows that keep their events for less than the partitions do: theirs go by DELETE
    in batches (through ``events (flow_id, ts)``), their leads with them."""
    out = []
    for flow in flows:
        if flow.retention_ms >= longest:
            continue
        edge = cutoff(now, flow.retention_ms)
        for table, age, unit in (("events", "ts", "events"), ("leads", "updated_at", "leads")):
            out.append(
                _batched(
                    conn,
                    schema,
                    Holding(
                        f"timeline {schema}",
                        f"{table} of flow {flow.id}",
                        0,
                        unit,
                        None,
                        0,
                        "delete in batches (retention shorter than the partitions')",
                    ),
                    table,
                    age,
                    f"flow_id = %s AND {age} < %s",
                    (flow.id, edge),
                    dry_run=dry_run,
                    held_by=("flow_id = %s", (flow.id,)),
                )
            )
    return out


def expire_analytics(
    conn: Connection, serving: str, flows: Sequence[Flow], now: datetime, *, dry_run: bool
) -> list[Holding]:
    """Each flow's rollup days once expired for it (flows no longer applied: the longest
    retention), and the counted-event record by day."""
    longest = longest_retention_ms(flows)
    out: list[Holding] = []
    ids = [f.id for f in flows]
    for gen in generations(conn, serving, "analytics"):
        if gen.state not in _LIVE:
            continue
        store = f"analytics {gen.schema}"
        cases = " OR ".join(["(flow_id = %s AND day <= %s)"] * len(flows))
        params: list[object] = [
            v for f in flows for v in (f.id, last_expired_day(now, f.retention_ms))
        ]
        condition = (cases + " OR " if cases else "") + "(flow_id <> ALL(%s) AND day <= %s)"
        params += [ids, last_expired_day(now, longest)]
        out.append(
            _batched(
                conn,
                gen.schema,
                Holding(store, "daily_event_counts", 0, "rows", None, 0, "delete days in batches"),
                "daily_event_counts",
                "day",
                condition,
                tuple(params),
                dry_run=dry_run,
            )
        )
        out += _expire_insights(conn, gen.schema, store, flows, now, dry_run=dry_run)
        out.append(
            _batched(
                conn,
                gen.schema,
                Holding(store, "counted_events", 0, "ids", None, 0, "delete days in batches"),
                "counted_events",
                "day",
                "day <= %s",
                (last_expired_day(now, longest),),
                dry_run=dry_run,
            )
        )
    return out


# The analytics of analytics migrations 003 and 004, with the time each row is kept by:
# its hour, its lead's submission, its delivery.
_INSIGHT_TABLES = (
    ("hourly_step_stats", "hour"),
    ("hourly_durations", "hour"),
    ("hourly_reasons", "hour"),
    ("lead_facts", "submitted_at"),
    ("lead_enhancements", "submitted_at"),
    ("delivery_facts", "delivered_at"),
    ("hourly_lead_outcomes", "hour"),
)


def _expire_insights(
    conn: Connection,
    schema: str,
    store: str,
    flows: Sequence[Flow],
    now: datetime,
    *,
    dry_run: bool,
) -> list[Holding]:
    """The hourly and per-lead rows of each flow from before the first day it still keeps
    (the rollups' day boundary, so the two agree), through their (flow_id, time) indexes."""
    longest = longest_retention_ms(flows)

    def kept_from(retention_ms: int) -> datetime:
        return datetime.combine(last_expired_day(now, retention_ms), time(), UTC) + timedelta(1)

    out = []
    for table, age in _INSIGHT_TABLES:
        cases = [f"(flow_id = %s AND {age} < %s)" for _ in flows]
        params: list[object] = [v for f in flows for v in (f.id, kept_from(f.retention_ms))]
        cases.append(f"(flow_id <> ALL(%s) AND {age} < %s)")
        params += [[f.id for f in flows], kept_from(longest)]
        out.append(
            _batched(
                conn,
                schema,
                Holding(store, table, 0, "rows", None, 0, "delete in batches"),
                table,
                age,
                " OR ".join(cases),
                tuple(params),
                dry_run=dry_run,
            )
        )
    return out


def _batched(
    conn: Connection,
    schema: str,
    holding: Holding,
    table: str,
    age: str,
    condition: str,
    params: tuple[object, ...],
    *,
    dry_run: bool,
    held_by: tuple[str, tuple[object, ...]] = ("true", ()),
) -> Holding:
    """``holding`` with ``table``'s figures filled in (the rows ``held_by`` selects, the
    whole table by default), and its rows matching ``condition`` deleted ``BATCH`` at a
    time (each batch its own transaction) unless ``dry_run``. The figures are exact
    counts, read through the indexes the conditions name."""
    target = sql.Identifier(schema, table)
    where = sql.SQL(condition)
    with translate_errors():
        row = conn.execute(
            sql.SQL("SELECT count(*), min({}) FROM {} WHERE {}").format(
                sql.Identifier(age), target, sql.SQL(held_by[0])
            ),
            held_by[1],
        ).fetchone()
        expired = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(target, where), params
        ).fetchone()
        removed = 0
        if not dry_run:
            # ctid (a row's address) finds each batch's rows again without a key, but is
            # unique only within one table: a partitioned table's rows go by their key.
            delete = sql.SQL(_DELETE_BY_KEY if table == "events" else _DELETE_BY_CTID).format(
                t=target, w=where
            )
            while True:
                cur = conn.execute(delete, (*params, BATCH))
                removed += cur.rowcount
                if cur.rowcount < BATCH:
                    break
    if removed:
        log.info("projection rows expired", schema=schema, table=table, rows=removed)
    oldest = row[1] if row else None
    if isinstance(oldest, date) and not isinstance(oldest, datetime):  # a rollup's day
        oldest = datetime.combine(oldest, time(), UTC)
    return Holding(
        holding.store,
        holding.item,
        int(row[0]) if row else 0,
        holding.unit,
        oldest,
        int(expired[0]) if expired else 0,
        holding.action,
        removed,
    )
