"""Whole UTC days from the analytics projection (``daily_event_counts``).

``/events/stats`` and the per-flow analytics read raw events: exact in any
time zone, percentiles included, but they scan every event of the range. A
dashboard over months wants the same counts from a few rows per day; this
reads them from the per-day aggregate, which the ``analytics`` projector keeps
(so it is as fresh as that projector, which runs next to the timeline's).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row

from projectors.stats import Table
from projectors.store import Connection, translate_errors

DailyGroup = Literal["type", "outcome", "step", "entity", "reason"]

_COLUMNS: dict[str, sql.Composable] = {
    "type": sql.SQL("type"),
    "outcome": sql.SQL("outcome"),
    "step": sql.SQL("step_id"),
    "entity": sql.SQL("nullif(entity_id, '')"),
    "reason": sql.SQL("nullif(reason, '')"),
}


def daily_counts(
    conn: Connection,
    flow_id: str,
    start: date | None,
    end: date | None,
    group_by: Sequence[DailyGroup] = (),
) -> Table:
    """Per UTC day in [start, end) and ``group_by`` value: events, mean and max duration
    (``ms``), cost and revenue; days without events are left out.

    Cost and revenue are the leads' totals, from their ``flow.completed`` events
    (on the day each lead completed): the steps' own events repeat the same
    money, and adding both would count it twice.
    """
    keys = [sql.SQL("{} AS {}").format(_COLUMNS[g], sql.Identifier(g)) for g in group_by]
    positions = sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(keys) + 1))
    query = sql.SQL(
        "SELECT day, {keys}sum(events)::bigint AS events,"
        " round(sum(ms_total)::numeric / sum(events), 1)::float8 AS ms_mean,"
        " max(ms_max) AS ms_max,"
        " coalesce(sum(cost) FILTER (WHERE type = 'flow.completed'), 0)::float8 AS cost,"
        " coalesce(sum(revenue) FILTER (WHERE type = 'flow.completed'), 0)::float8 AS revenue"
        " FROM daily_event_counts"
        " WHERE flow_id = %s AND day >= coalesce(%s::date, '-infinity')"
        " AND day < coalesce(%s::date, 'infinity')"
        " GROUP BY {positions} ORDER BY {positions}"
    ).format(keys=sql.SQL("").join(sql.SQL("{}, ").format(k) for k in keys), positions=positions)
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (flow_id, start, end))
        columns = tuple(c.name for c in cur.description or ())
        rows: list[dict[str, Any]] = [
            {**row, "day": row["day"].isoformat()} for row in cur.fetchall()
        ]
    return Table(columns, rows)
