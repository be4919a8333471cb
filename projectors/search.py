"""Filtered, keyset-paged reads of one flow's events, for the events API.

Paging is by event id, never OFFSET: ids are unique and sort in timeline
order, so ``id > after_id`` resumes exactly where the last page ended even
while new events arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from projectors.store import Connection, translate_errors


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What ``flow_events`` selects: every field left as None (or empty) selects everything."""

    lead_id: str | None = None
    types: Sequence[str] = ()
    outcome: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    after_id: str | None = None  # exclusive
    before_id: str | None = None  # exclusive


def flow_events(
    conn: Connection,
    flow_id: str,
    where: EventFilter,
    *,
    limit: int = 100,
    descending: bool = True,
) -> list[dict[str, Any]]:
    """One page of the flow's events matching ``where``, ordered by id."""
    clauses: list[sql.Composable] = [sql.SQL("flow_id = %s")]
    params: list[Any] = [flow_id]
    for column, op, value in (
        ("lead_id", "=", where.lead_id),
        ("outcome", "=", where.outcome),
        ("ts", ">=", where.start),
        ("ts", "<", where.end),
        ("id", ">", where.after_id),
        ("id", "<", where.before_id),
    ):
        if value is not None:
            clauses.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(op)))
            params.append(value)
    if where.types:
        clauses.append(sql.SQL("type = ANY(%s)"))
        params.append(list(where.types))
    query = sql.SQL("SELECT snapshot FROM events WHERE {} ORDER BY id {} LIMIT %s").format(
        sql.SQL(" AND ").join(clauses), sql.SQL("DESC" if descending else "ASC")
    )
    params.append(limit)
    with translate_errors():
        rows = conn.execute(query, params).fetchall()
    return [row[0] for row in rows]
