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

from fastapi import Query
from fastapi.responses import Response

from projectors.api import Id
from projectors.insights import (
    buyer_behaviour,
    buyer_hours,
    enhancement_value,
    rejections,
    source_performance,
    step_performance,
)
from projectors.params import query_error
from projectors.stats_api import JSON_OR_CSV, FlowTable, stats_router, time_zones

router = stats_router()


@router.get("/flows/{flow_id}/insights/steps", responses=JSON_OR_CSV)
def get_step_performance(
    ask: FlowTable,
    interval: Annotated[
        Literal["hour"] | None, Query(description="hour: a row per step and UTC hour")
    ] = None,
) -> Response:
    """Per step (and hour): decisions, outcomes with percentages, duration mean/p50/p95/max."""
    return ask.answer(
        step_performance(ask.conn, ask.flow_id, ask.when, per_hour=interval == "hour")
    )


@router.get("/flows/{flow_id}/insights/rejections", responses=JSON_OR_CSV)
def get_rejections(
    ask: FlowTable,
    source_id: Id = None,
    step_id: Id = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Reasons by source and step, most frequent first, with their percentages."""
    table = rejections(ask.conn, ask.flow_id, ask.when, source_id, step_id, limit)
    return ask.answer(table)


@router.get("/flows/{flow_id}/insights/enhancements", responses=JSON_OR_CSV)
def get_enhancement_value(
    ask: FlowTable,
) -> Response:
    """Per enhancement: delivery rate with and without it, its cost, the revenue difference."""
    return ask.answer(enhancement_value(ask.conn, ask.flow_id, ask.when))


@router.get("/flows/{flow_id}/insights/sources", responses=JSON_OR_CSV)
def get_source_performance(
    ask: FlowTable,
) -> Response:
    """Per source: submitted, acceptance, enhancement cost, delivery rate, revenue, profit."""
    return ask.answer(source_performance(ask.conn, ask.flow_id, ask.when))


@router.get("/flows/{flow_id}/insights/buyers", responses=JSON_OR_CSV)
def get_buyer_behaviour(
    ask: FlowTable,
) -> Response:
    """Per buyer: acceptance, response time mean/p95, revenue per lead, returns, conversions."""
    return ask.answer(buyer_behaviour(ask.conn, ask.flow_id, ask.when))


@router.get("/flows/{flow_id}/insights/buyer-hours", responses=JSON_OR_CSV)
def get_buyer_hours(
    ask: FlowTable,
    timezone: Annotated[
        str, Query(max_length=64, description="IANA name the hours of the day are in")
    ] = "UTC",
) -> Response:
    """Per buyer and hour of the day: answers and acceptance rate."""
    if timezone not in time_zones():
        raise query_error("timezone", f"Unknown time zone {timezone!r}; use an IANA name", timezone)
    return ask.answer(buyer_hours(ask.conn, ask.flow_id, ask.when, timezone))
