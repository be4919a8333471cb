"""Filtered, keyset-paged reads of events, in the order they were written, for the events API.

Pages follow insertion order, ``(xid, id)``: the id of the Postgres transaction
that wrote the row, then the event id. Event ids alone sort by submission time,
so a late event of an early lead (a delivery after a retry, buyer feedback)
would get an id below a cursor a client already holds, and paging by id would
skip it. Transaction ids only grow, but they are handed out at the first write
and committed in any order, so a page reads only rows whose transaction is
older than every one still running (``pg_snapshot_xmin``): nothing can commit
behind a cursor afterwards. The price is that a row shows up once every writer
that started before it has finished - milliseconds with the projector's short
batches, longer while any transaction on the server holds a write open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from projectors.errors import ProjectorError
from projectors.store import Connection, translate_errors

# Every row at or past this transaction id may still have company on its way.
_HORIZON = sql.SQL("xid < pg_snapshot_xmin(pg_current_snapshot())")


class UnknownCursorError(ProjectorError):
    """``after_id``/``before_id`` names no stored event, so there is no position to page from."""

    def __init__(self, param: str, event_id: str) -> None:
        self.param = param
        self.event_id = event_id
        super().__init__(f"{param}: no event has id {event_id}")


@dataclass(frozen=True, slots=True)
class EventQuery:
    """What ``search_events`` selects: every filter left as None (or empty) selects everything."""

    flow_id: str | None = None
    lead_id: str | None = None
    types: Sequence[str] = ()
    outcome: str | None = None
    step_id: str | None = None
    ids: Sequence[str] = ()
    reason: str | None = None
    min_ms: int | None = None
    start: datetime | None = None  # inclusive, on the event's timestamp
    end: datetime | None = None  # exclusive
    after_id: str | None = None  # exclusive: the ``limit`` events written right after it
    before_id: str | None = None  # exclusive: the ``limit`` events written right before it
    limit: int = 100
    descending: bool = True


def _positions(conn: Connection, query: EventQuery) -> dict[str, tuple[str, str]]:
    """The (xid, id) of each cursor; xid as text, since it goes back as a parameter."""
    wanted = {p: v for p, v in (("after_id", query.after_id), ("before_id", query.before_id)) if v}
    if not wanted:
        return {}
    with translate_errors():
        rows = conn.execute(
            "SELECT id, xid::text FROM events WHERE id = ANY(%s)", (list(wanted.values()),)
        ).fetchall()
    found = {event_id: (xid, event_id) for event_id, xid in rows}
    for param, event_id in wanted.items():
        if event_id not in found:
            raise UnknownCursorError(param, event_id)
    return {param: found[event_id] for param, event_id in wanted.items()}


def event_filters(
    *,
    flow_id: str | None = None,
    lead_id: str | None = None,
    outcome: str | None = None,
    step_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    types: Sequence[str] = (),
    ids: Sequence[str] = (),
    reason: str | None = None,
    min_ms: int | None = None,
) -> tuple[list[sql.Composable], list[Any]]:
    """The SQL conditions on ``events`` every read route filters by (None selects all), and
    their parameters; ``start`` inclusive, ``end`` exclusive, on the event's timestamp."""
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for column, op, value in (
        ("flow_id", "=", flow_id),
        ("lead_id", "=", lead_id),
        ("outcome", "=", outcome),
        ("step_id", "=", step_id),
        ("ts", ">=", start),
        ("ts", "<", end),
        ("reason", "=", reason),
        ("ms", ">=", min_ms),
    ):
        if value is not None:
            clauses.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(op)))
            params.append(value)
    if types:
        clauses.append(sql.SQL("type = ANY(%s)"))
        params.append(list(types))
    if ids:
        clauses.append(sql.SQL("id = ANY(%s)"))
        params.append(list(ids))
    return clauses, params


def _reads_forwards(query: EventQuery, positions: dict[str, tuple[str, str]]) -> bool:
    """Which way the page is read from its cursor: from ``after_id`` alone forwards, from
    ``before_id`` alone backwards; with neither or both, from where ``sort`` starts."""
    if ("after_id" in positions) != ("before_id" in positions):
        return "after_id" in positions
    return not query.descending


def search_events(conn: Connection, query: EventQuery) -> list[dict[str, Any]]:
    """One page of events matching ``query``, in insertion order (newest first if descending):
    the ``limit`` events next to the cursor (see ``_reads_forwards``).

    Raises ``UnknownCursorError`` when a cursor is not a stored event id.
    """
    positions = _positions(conn, query)
    clauses, params = event_filters(
        flow_id=query.flow_id,
        lead_id=query.lead_id,
        outcome=query.outcome,
        step_id=query.step_id,
        start=query.start,
        end=query.end,
        types=query.types,
        ids=query.ids,
        reason=query.reason,
        min_ms=query.min_ms,
    )
    clauses.insert(0, _HORIZON)
    for param, op in (("after_id", ">"), ("before_id", "<")):
        if param in positions:
            clauses.append(sql.SQL("(xid, id) {} (%s::xid8, %s)").format(sql.SQL(op)))
            params.extend(positions[param])
    # A page is the ``limit`` events next to its cursor: right after ``after_id`` (read
    # forwards), right before ``before_id`` (read backwards), whatever the sort; ``sort``
    # only orders the page. So a client paging forwards with after_id = the page's newest
    # id, or backwards with before_id = its oldest, sees every event once in either order.
    forwards = _reads_forwards(query, positions)
    direction = sql.SQL("ASC" if forwards else "DESC")
    statement = sql.SQL(
        "SELECT snapshot FROM events WHERE {} ORDER BY xid {}, id {} LIMIT %s"
    ).format(sql.SQL(" AND ").join(clauses), direction, direction)
    params.append(query.limit)
    with translate_errors():
        rows = conn.execute(statement, params).fetchall()
    if forwards == query.descending:
        rows.reverse()
    return [row[0] for row in rows]
