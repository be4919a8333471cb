"""Counts and analytics over the ``events`` projection: the seeds' reporting queries, in SQL.

Everything is aggregated by Postgres from the events themselves (exact
percentiles included), so an answer is as fresh as the projection. Where a
figure is not a column it is read the way the engine writes it:

* a lead's **source** is ``vars.source.id`` (the ``entity_id`` of its source events);
* a **recipient** is the step id of ``recipient.*`` events (and the ``entity_id``
  of the ``feedback.*`` events about its deliveries);
* **cost** is what the steps charged (``source.accepted``'s cost today), never
  ``flow.completed``'s, which repeats the lead's total;
* **revenue** is the price on ``recipient.delivered``, unless the buyer later
  returned that delivery (``feedback.processed`` with ``feedback.type`` = return).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row

from projectors.errors import ProjectorError
from projectors.params import TimeRange, iso_utc
from projectors.store import Connection, translate_errors

Interval = Literal["hour", "day", "week", "month"]
GroupBy = Literal["type", "outcome", "step", "source", "recipient", "reason"]

MAX_STATS_ROWS = 10_000

# The event that records a step's decision on a lead: one per step run (one per
# attempt when retried). source.submitted, retries and flow.completed are not
# decisions, and counting them would double every lead.
VERDICT_TYPES = (
    "source.accepted", "source.rejected",
    "enhancement.success", "enhancement.failure", "enhancement.error",
    "filter.passed", "filter.failed",
    "recipient.delivered", "recipient.failed", "recipient.error",
)  # fmt: skip

_GROUP_COLUMNS: dict[str, sql.Composable] = {
    "type": sql.SQL("type"),
    "outcome": sql.SQL("outcome"),
    "step": sql.SQL("step_id"),
    "source": sql.SQL("snapshot #>> '{vars,source.id}'"),
    "recipient": sql.SQL(
        "CASE WHEN starts_with(type, 'recipient.') THEN step_id"
        " WHEN starts_with(type, 'feedback.') THEN entity_id END"
    ),
    "reason": sql.SQL("reason"),
}

_IN_RANGE = sql.SQL(
    "ts >= coalesce(%(start)s::timestamptz, '-infinity')"
    " AND ts < coalesce(%(end)s::timestamptz, 'infinity')"
)

# Whether the recipient.delivered event ``e`` was later returned by the buyer.
_RETURNED = sql.SQL(
    """EXISTS (SELECT 1 FROM events f
        WHERE f.lead_id = e.lead_id AND f.type = 'feedback.processed'
          AND f.snapshot #>> '{vars,feedback.type}' = 'return'
          AND f.snapshot #>> '{vars,feedback.recipient_event_id}' = e.id)"""
)


class TooManyRowsError(ProjectorError):
    """A stats query would answer more rows than ``MAX_STATS_ROWS``."""


@dataclass(frozen=True, slots=True)
class Table:
    """An answer as named columns (for CSV headers, even with no rows) and rows."""

    columns: tuple[str, ...]
    rows: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StatsQuery:
    group_by: Sequence[GroupBy] = ()
    interval: Interval | None = None
    timezone: str = "UTC"  # an IANA name, checked by the caller
    when: TimeRange = field(default_factory=TimeRange)
    flow_id: str | None = None
    types: Sequence[str] = ()


def query_table(conn: Connection, query: sql.Composed, params: dict[str, Any]) -> Table:
    """Run ``query`` into a ``Table``, times as ISO 8601 UTC: one answer shape for every
    stats and insights route."""
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        columns = tuple(column.name for column in cur.description or ())
        rows = [
            {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
            for row in cur.fetchall()
        ]
    return Table(columns, rows)


def _range(when: TimeRange) -> dict[str, Any]:
    return {"start": when.start, "end": when.end}


def event_stats(conn: Connection, query: StatsQuery) -> Table:
    """Event counts per bucket of ``interval`` in ``timezone`` and per ``group_by`` value.

    A bucket is named by the UTC instant it starts at (a day in America/Chicago
    starts at 06:00Z or 05:00Z); weeks start on Monday; empty buckets are left out.
    """
    keys: list[sql.Composable] = []
    if query.interval is not None:
        # In the zone, so DST is respected: a local day may last 23 or 25 hours.
        keys.append(sql.SQL("date_trunc(%(interval)s, ts, %(timezone)s) AS bucket"))
    keys += [
        sql.SQL("{} AS {}").format(_GROUP_COLUMNS[name], sql.Identifier(name))
        for name in query.group_by
    ]
    where: list[sql.Composable] = [_IN_RANGE]
    if query.flow_id is not None:
        where.append(sql.SQL("flow_id = %(flow_id)s"))
    if query.types:
        where.append(sql.SQL("type = ANY(%(types)s)"))
    positions = sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(keys)))
    statement = sql.SQL(
        "SELECT {keys} count(*) AS count FROM events WHERE {where}"
        "{group} ORDER BY {order} LIMIT %(cap)s"
    ).format(
        keys=sql.SQL("").join(sql.SQL("{}, ").format(k) for k in keys),
        where=sql.SQL(" AND ").join(where),
        group=sql.SQL(" GROUP BY {}").format(positions) if keys else sql.SQL(""),
        order=positions if keys else sql.SQL("1"),
    )
    params = {
        **_range(query.when),
        "interval": query.interval,
        "timezone": query.timezone,
        "flow_id": query.flow_id,
        "types": list(query.types),
        "cap": MAX_STATS_ROWS + 1,
    }
    table = query_table(conn, statement, params)
    if len(table.rows) > MAX_STATS_ROWS:
        raise TooManyRowsError(
            f"more than {MAX_STATS_ROWS} rows: narrow start/end, use a coarser interval"
            " or fewer group_by fields"
        )
    return table


_STEPS = sql.SQL(
    """
SELECT *,
       round(success::numeric / count, 4)::float8 AS success_rate,
       round(failure::numeric / count, 4)::float8 AS failure_rate,
       round(error::numeric / count, 4)::float8 AS error_rate
FROM (
    SELECT step_id, max(step_name) AS step_name, count(*) AS count,
           count(*) FILTER (WHERE outcome = 'success') AS success,
           count(*) FILTER (WHERE outcome = 'failure') AS failure,
           count(*) FILTER (WHERE outcome = 'error') AS error,
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1)::float8 AS ms_p50,
           round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1)::float8 AS ms_p95,
           max(ms) AS ms_max,
           min(step_count) AS position
    FROM events
    WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s) AND {in_range}
    GROUP BY step_id
) s
ORDER BY position, step_id
"""
).format(in_range=_IN_RANGE)


def step_analytics(conn: Connection, flow_id: str, when: TimeRange) -> Table:
    """Per step, in flow order: decisions made, their outcome rates and how long they took."""
    params = {**_range(when), "flow_id": flow_id, "verdicts": list(VERDICT_TYPES)}
    table = query_table(conn, _STEPS, params)
    columns = tuple(c for c in table.columns if c != "position")
    return Table(columns, [{c: row[c] for c in columns} for row in table.rows])


_REASONS = sql.SQL(
    """
SELECT reason, step_id, type, count(*) AS count,
       round(count(*)::numeric / sum(count(*)) OVER (), 4)::float8 AS share
FROM events
WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s) AND outcome <> 'success'
  AND reason IS NOT NULL AND (%(step_id)s::text IS NULL OR step_id = %(step_id)s)
  AND {in_range}
GROUP BY reason, step_id, type
ORDER BY count DESC, step_id, reason
LIMIT %(limit)s
"""
).format(in_range=_IN_RANGE)


def reason_analytics(
    conn: Connection, flow_id: str, when: TimeRange, step_id: str | None = None, limit: int = 100
) -> Table:
    """Why leads were refused or failed, most frequent first; ``share`` is of all such events."""
    params = {
        **_range(when),
        "flow_id": flow_id,
        "verdicts": list(VERDICT_TYPES),
        "step_id": step_id,
        "limit": limit,
    }
    return query_table(conn, _REASONS, params)


# Per source, from a ``per_lead`` CTE of one row per submitted lead (source_id,
# source_name, accepted, delivered, cost, revenue): the seeds' questions about a source.
# The operator UI's dashboard builds its own per_lead (bounded by lead id) and ends the same.
SOURCE_TOTALS = sql.SQL(
    """SELECT *,
       round(accepted::numeric / submitted, 4)::float8 AS acceptance_rate,
       round(delivered::numeric / nullif(accepted, 0), 4)::float8 AS delivery_rate,
       round((revenue - cost)::numeric, 4)::float8 AS profit
FROM (
    SELECT source_id, max(source_name) AS source_name, count(*) AS submitted,
           count(*) FILTER (WHERE accepted) AS accepted,
           count(*) FILTER (WHERE delivered) AS delivered,
           round(sum(cost)::numeric, 4)::float8 AS cost,
           round(sum(revenue)::numeric, 4)::float8 AS revenue
    FROM per_lead
    GROUP BY source_id
) s
ORDER BY submitted DESC, source_id"""
)

_SOURCES = sql.SQL(
    """
WITH submitted AS (
    SELECT lead_id, entity_id AS source_id, snapshot #>> '{{vars,source.name}}' AS source_name
    FROM events
    WHERE flow_id = %(flow_id)s AND type = 'source.submitted' AND {in_range}
), per_lead AS (
    SELECT s.source_id, s.source_name,
           bool_or(e.type = 'source.accepted') AS accepted,
           bool_or(e.type = 'recipient.delivered') AS delivered,
           coalesce(sum(e.cost) FILTER (WHERE e.type <> 'flow.completed'), 0) AS cost,
           coalesce(sum(e.revenue) FILTER (
               WHERE e.type = 'recipient.delivered' AND NOT {returned}), 0) AS revenue
    FROM submitted s JOIN events e ON e.lead_id = s.lead_id
    GROUP BY s.source_id, s.source_name, s.lead_id
)
{totals}
"""
).format(in_range=_IN_RANGE, returned=_RETURNED, totals=SOURCE_TOTALS)


def source_analytics(conn: Connection, flow_id: str, when: TimeRange) -> Table:
    """Per source, the leads it submitted in the range and what became of them, whenever that
    was: accepted, delivered (to at least one buyer), cost, revenue and profit."""
    return query_table(conn, _SOURCES, {**_range(when), "flow_id": flow_id})


_RECIPIENTS = sql.SQL(
    """
WITH deliveries AS (
    SELECT e.step_id, e.step_name, e.step_count, e.lead_id, e.type, e.wait_ms, e.revenue,
           -- a capped lead is refused without calling the buyer: no response time
           e.snapshot ->> 'cap_reached' IS DISTINCT FROM 'true' AS called,
           e.type = 'recipient.delivered' AND {returned} AS returned
    FROM events e
    WHERE e.flow_id = %(flow_id)s AND starts_with(e.type, 'recipient.') AND {in_range}
)
SELECT step_id, step_name, leads, accepted,
       round(accepted::numeric / leads, 4)::float8 AS acceptance_rate,
       failed, errors, response_ms_p50, response_ms_p95, returned, revenue
FROM (
    SELECT step_id, max(step_name) AS step_name, min(step_count) AS position,
           count(DISTINCT lead_id) AS leads,
           count(DISTINCT lead_id) FILTER (WHERE type = 'recipient.delivered') AS accepted,
           count(*) FILTER (WHERE type = 'recipient.failed') AS failed,
           count(*) FILTER (WHERE type = 'recipient.error') AS errors,
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_ms)
                  FILTER (WHERE called))::numeric, 1)::float8 AS response_ms_p50,
           round((percentile_cont(0.95) WITHIN GROUP (ORDER BY wait_ms)
                  FILTER (WHERE called))::numeric, 1)::float8 AS response_ms_p95,
           count(*) FILTER (WHERE returned) AS returned,
           round(coalesce(sum(revenue) FILTER (
               WHERE type = 'recipient.delivered' AND NOT returned), 0)::numeric, 4)::float8
               AS revenue
    FROM deliveries
    GROUP BY step_id
) r
ORDER BY position, step_id
"""
).format(in_range=_IN_RANGE, returned=_RETURNED)


def recipient_analytics(conn: Connection, flow_id: str, when: TimeRange) -> Table:
    """Per recipient: of the leads offered to it in the range, how many it accepted; how fast
    it answered (``wait_ms``, over the calls made); the revenue it brought, net of returns."""
    return query_table(conn, _RECIPIENTS, {**_range(when), "flow_id": flow_id})
