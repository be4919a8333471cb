"""The analytics projection's answers to seed 002 over HTTP (``projectors.insights``): JSON
arrays, or CSV with ``format=csv`` (or ``Accept: text/csv``), under the ``stats`` scope
like every other stats route.

``GET /flows/{flow_id}/insights/steps|rejections|enhancements|sources|buyers|buyer-hours``.
Unlike ``/flows/{flow_id}/analytics/*``, which read the range's events, these read the
projection's hourly and per-lead rows, so they cost the same for a day of ten leads as for
one of ten million, and ``leadflow replay analytics`` rebuilds them exactly.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from engine.access.guard import STATS, StatsReader, check_flow
from engine.web.responses import answers, as_text, guarded
from projectors.api import Conn, Id
from projectors.insights import (
    buyer_behaviour,
    buyer_hours,
    enhancement_value,
    rejections,
    source_performance,
    step_performance,
)
from projectors.params import Range, StrictQuery, query_error
from projectors.stats_api import Format, respond, time_zones

router = APIRouter(
    tags=["stats"],
    dependencies=[Depends(STATS), StrictQuery],
    responses={**guarded(), **answers(503)},
)
_JSON_OR_CSV = as_text("Rows as JSON, or as CSV with format=csv", "text/csv")


@router.get("/flows/{flow_id}/insights/steps", responses=_JSON_OR_CSV)
def get_step_performance(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    interval: Annotated[
        Literal["hour"] | None, Query(description="hour: a row per step and UTC hour")
    ] = None,
    format: Format = None,
) -> Response:
    """Per step (and hour): decisions, outcomes with percentages, duration mean/p50/p95/max."""
    check_flow(reader, flow_id)
    table = step_performance(conn, flow_id, when, per_hour=interval == "hour")
    return respond(table, request, format, reader, conn)


@router.get("/flows/{flow_id}/insights/rejections", responses=_JSON_OR_CSV)
def get_rejections(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    source_id: Id = None,
    step_id: Id = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Format = None,
) -> Response:
    """Reasons by source and step, most frequent first, with their percentages."""
    check_flow(reader, flow_id)
    table = rejections(conn, flow_id, when, source_id, step_id, limit)
    return respond(table, request, format, reader, conn)


@router.get("/flows/{flow_id}/insights/enhancements", responses=_JSON_OR_CSV)
def get_enhancement_value(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    format: Format = None,
) -> Response:
    """Per enhancement: delivery rate with and without it, its cost, the revenue difference."""
    check_flow(reader, flow_id)
    return respond(enhancement_value(conn, flow_id, when), request, format, reader, conn)


@router.get("/flows/{flow_id}/insights/sources", responses=_JSON_OR_CSV)
def get_source_performance(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    format: Format = None,
) -> Response:
    """Per source: submitted, acceptance, enhancement cost, delivery rate, revenue, profit."""
    check_flow(reader, flow_id)
    return respond(source_performance(conn, flow_id, when), request, format, reader, conn)


@router.get("/flows/{flow_id}/insights/buyers", responses=_JSON_OR_CSV)
def get_buyer_behaviour(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    format: Format = None,
) -> Response:
    """Per buyer: acceptance, response time mean/p95, revenue per lead, returns, conversions."""
    check_flow(reader, flow_id)
    return respond(buyer_behaviour(conn, flow_id, when), request, format, reader, conn)


@router.get("/flows/{flow_id}/insights/buyer-hours", responses=_JSON_OR_CSV)
def get_buyer_hours(
    flow_id: str,
    request: Request,
    conn: Conn,
    reader: StatsReader,
    when: Range,
    timezone: Annotated[
        str, Query(max_length=64, description="IANA name the hours of the day are in")
    ] = "UTC",
    format: Format = None,
) -> Response:
    """Per buyer and hour of the day: answers and acceptance rate."""
    check_flow(reader, flow_id)
    if timezone not in time_zones():
        raise query_error("timezone", f"Unknown time zone {timezone!r}; use an IANA name", timezone)
    return respond(buyer_hours(conn, flow_id, when, timezone), request, format, reader, conn)
