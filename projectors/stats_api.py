"""Event counts and per-flow analytics over HTTP, as JSON arrays or CSV.

``GET /events/stats`` counts events per time bucket and per ``group_by`` value;
``GET /flows/{flow_id}/analytics/{steps,reasons,sources,recipients}`` answer the
seeds' reporting questions for a time range; ``GET /flows/{flow_id}/analytics/daily``
reads whole UTC days from the analytics projection, for long ranges. Every route answers a bare JSON
array of rows, or CSV with ``format=csv`` (or ``Accept: text/csv``). Times in
are ISO 8601 (UTC when they carry no offset); times out are ISO 8601 UTC, bucket
starts included: a bucket computed in another ``timezone`` is named by the UTC
instant its local start falls on.

Mount this router before ``projectors.api``'s, whose ``/events/{event_id}``
would otherwise take ``/events/stats`` for an event id.
"""

from __future__ import annotations

import csv
import io
import zoneinfo
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator

from engine.access.guard import STATS, StatsReader, check_flow, only_flow
from engine.access.scopes import Principal
from engine.masking import for_reader
from engine.state.keys import reveal_sealed
from engine.web.responses import answers, as_text, guarded
from projectors.api import Conn, Id
from projectors.daily import DailyGroup, daily_counts
from projectors.params import Range, StrictQuery, TimeRange, query_error, span_problem
from projectors.selection import EventType, iso_only, range_problem
from projectors.stats import (
    GroupBy,
    Interval,
    StatsQuery,
    Table,
    TooManyRowsError,
    event_stats,
    reason_analytics,
    recipient_analytics,
    source_analytics,
    step_analytics,
)
from projectors.store import Connection


def stats_router() -> APIRouter:
    """A router for routes under the ``stats`` scope that refuse unknown query parameters:
    the stats routes' and the insights routes', so both are guarded alike."""
    return APIRouter(
        tags=["stats"],
        dependencies=[Depends(STATS), StrictQuery],
        responses={**guarded(), **answers(503)},
    )


router = stats_router()
# Each route answers JSON, or CSV with format=csv (or Accept: text/csv).
JSON_OR_CSV = as_text("Rows as JSON, or as CSV with format=csv", "text/csv")

Format = Annotated[Literal["json", "csv"] | None, Query(description="default json")]
_GROUPS: dict[str, GroupBy] = {name: name for name in get_args(GroupBy)}


@cache
def time_zones() -> frozenset[str]:
    # "localtime" is the server's zone under a file name, not a zone a client can mean.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``= + - @``, a tab or a line break
    first: reasons and ids quote what a web form was given) prefixed with ``'``; numbers
    (negative profit included) stay numbers."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def respond(
    table: Table,
    request: Request,
    format: str | None,
    reader: Principal,
    conn: Conn | None = None,
) -> Response:
    """The table as JSON or CSV; reasons and other text masked (``engine.masking``) unless
    the key holds ``pii:read`` (a reason may quote a lead's email or phone)."""
    if format is None:
        format = "csv" if "text/csv" in request.headers.get("accept", "") else "json"
    # A reason may quote a sealed value (engine.sealing): opened for this reader first.
    rows = table.rows if conn is None else reveal_sealed(conn, table.rows, sees_pii=reader.sees_pii)
    rows = rows if reader.sees_pii else for_reader(rows, sees_pii=False)
    if format == "json":
        return JSONResponse(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows([neutralise(row[c]) for c in table.columns] for row in rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8")


@dataclass(frozen=True, slots=True)
class FlowRead:
    """One flow's table over a time range, as a route is asked for it: the flow is checked
    against the reader's scope before any query runs (the route cannot forget it), and
    ``answer`` shapes the rows as the caller asked (JSON or CSV, masked for the reader)."""

    flow_id: str
    conn: Connection
    when: TimeRange
    request: Request
    reader: Principal
    format: str | None

    def answer(self, table: Table) -> Response:
        return respond(table, self.request, self.format, self.reader, self.conn)


def _flow_read(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    format: Format = None,
) -> FlowRead:
    check_flow(reader, flow_id)
    return FlowRead(flow_id, conn, when, request, reader, format)


FlowTable = Annotated[FlowRead, Depends(_flow_read)]


def _group_by(values: list[str]) -> tuple[GroupBy, ...]:
    """Repeated (``group_by=type&group_by=outcome``) or comma-separated, in the order given."""
    names: list[GroupBy] = []
    for value in values:
        for name in filter(None, (part.strip() for part in value.split(","))):
            if name not in _GROUPS:
                raise query_error(
                    "group_by", f"Unknown group_by {name!r}; use any of: {', '.join(_GROUPS)}", name
                )
            if name not in names:
                names.append(_GROUPS[name])
    return tuple(names)


@router.get("/events/stats", responses=JSON_OR_CSV)
def get_event_stats(
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    group_by: Annotated[
        list[str] | None,
        Query(max_length=6, description=f"repeatable or comma-separated: {', '.join(_GROUPS)}"),
    ] = None,
    interval: Interval | None = None,
    timezone: Annotated[
        str, Query(max_length=64, description="IANA name; buckets start at local midnight etc.")
    ] = "UTC",
    flow_id: Id = None,
    type: Annotated[list[EventType] | None, Query(max_length=50)] = None,
    format: Format = None,
) -> Response:
    """Event counts per ``interval`` bucket (in ``timezone``) and ``group_by`` value."""
    if timezone not in time_zones():
        raise query_error("timezone", f"Unknown time zone {timezone!r}; use an IANA name", timezone)
    query = StatsQuery(
        group_by=_group_by(group_by or []),
        interval=interval,
        timezone=timezone,
        when=when,
        flow_id=only_flow(reader, flow_id),
        types=tuple(type or ()),
    )
    try:
        table = event_stats(conn, query)
    except TooManyRowsError as exc:
        # No one parameter is at fault: the error names the query as a whole.
        raise RequestValidationError(
            [{"type": "too_many_rows", "loc": ("query",), "msg": str(exc), "input": None}]
        ) from None
    return respond(table, request, format, reader, conn)


@router.get("/flows/{flow_id}/analytics/steps", responses=JSON_OR_CSV)
def get_step_analytics(
    ask: FlowTable,
) -> Response:
    """Per step: count, success/failure/error rates, duration (``ms``) p50/p95/max."""
    return ask.answer(step_analytics(ask.conn, ask.flow_id, ask.when))


@router.get("/flows/{flow_id}/analytics/reasons", responses=JSON_OR_CSV)
def get_reason_analytics(
    ask: FlowTable,
    step_id: Id = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Failure and error reasons, most frequent first, with their share of all of them."""
    table = reason_analytics(ask.conn, ask.flow_id, ask.when, step_id, limit)
    return ask.answer(table)


@router.get("/flows/{flow_id}/analytics/sources", responses=JSON_OR_CSV)
def get_source_analytics(
    ask: FlowTable,
) -> Response:
    """Per source, over the leads it submitted in the range: submitted, accepted, delivered,
    cost, revenue, profit."""
    return ask.answer(source_analytics(ask.conn, ask.flow_id, ask.when))


@router.get("/flows/{flow_id}/analytics/recipients", responses=JSON_OR_CSV)
def get_recipient_analytics(
    ask: FlowTable,
) -> Response:
    """Per recipient: acceptance rate, response time p50/p95, revenue net of returns."""
    return ask.answer(recipient_analytics(ask.conn, ask.flow_id, ask.when))


_DAILY_GROUPS: dict[str, DailyGroup] = {name: name for name in get_args(DailyGroup)}
# A day as ISO 8601 text only: pydantic would read a number as seconds since the epoch.
Day = Annotated[date, BeforeValidator(iso_only)]


@router.get("/flows/{flow_id}/analytics/daily", responses=JSON_OR_CSV)
def get_daily_analytics(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    start: Annotated[Day | None, Query(description="first UTC day, inclusive; ISO 8601")] = None,
    end: Annotated[
        Day | None,
        Query(description="UTC day after the last, exclusive; must be after start (422)"),
    ] = None,
    group_by: Annotated[
        list[str] | None,
        Query(
            max_length=5, description=f"repeatable or comma-separated: {', '.join(_DAILY_GROUPS)}"
        ),
    ] = None,
    format: Format = None,
) -> Response:
    """Per UTC day (and ``group_by`` value): events, mean and max ``ms``, cost, revenue."""
    check_flow(reader, flow_id)
    problem = range_problem(start, end)
    if problem is None and start is not None and end is not None:
        problem = span_problem(request, end - start)
    if problem is not None:
        raise query_error("end", problem, end.isoformat() if end else None)
    names: list[DailyGroup] = []
    for value in group_by or []:
        for name in filter(None, (part.strip() for part in value.split(","))):
            if name not in _DAILY_GROUPS:
                raise query_error(
                    "group_by",
                    f"Unknown group_by {name!r}; use any of: {', '.join(_DAILY_GROUPS)}",
                    name,
                )
            if name not in names:
                names.append(_DAILY_GROUPS[name])
    return respond(daily_counts(conn, flow_id, start, end, names), request, format, reader, conn)
