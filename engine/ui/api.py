"""The operator UI's JSON reads, under ``/ui/api``: every route needs a read key.

They reuse the projection's own queries (``projectors``) and add what a page
needs and the public read API does not answer in one call: a search box, a
lead's summary with its timeline page, a diff with both sides named, one
dashboard payload. What leaves here has passed ``engine.access.disclosure.disclose``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from engine.access.disclosure import disclose
from engine.access.guard import EVENTS_READ, EventsReader, hide_foreign, only_flow
from engine.access.scopes import Principal
from engine.runtime.calls.status import fetch_status, metrics_urls
from engine.ui.dashboard import dashboard
from engine.ui.insights import insights
from engine.ui.objects import locate
from engine.ui.queries import (
    LeadFilter,
    browse_leads,
    classify,
    find_leads,
    flow_ids,
    lead_summary,
    neighbour_before,
    timeline_page,
)
from engine.web.responses import answers, guarded
from projectors.api import Conn, Id
from projectors.diff import diff_snapshots
from projectors.exports.schedule_api import Conn as SchedulesConn
from projectors.exports.schedule_api import visible_runs
from projectors.params import Range, StrictQuery
from projectors.queries import get_event
from projectors.selection import EventType, Outcome
from projectors.store import Connection

# A page must answer within a screen refresh or two; a scan that would take
# longer is cut off (a 503 saying so) rather than left running on the server.
_STATEMENT_TIMEOUT = "15s"


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


def _bounded(conn: Conn) -> Iterator[Connection]:
    conn.execute(f"SET statement_timeout = '{_STATEMENT_TIMEOUT}'")
    yield conn


Bounded = Annotated[Connection, Depends(_bounded)]

router = APIRouter(
    prefix="/ui/api",
    tags=["ui"],
    dependencies=[Depends(EVENTS_READ), StrictQuery, Depends(_no_store)],
    responses={**guarded(), **answers(503)},
)


@router.get("/whoami")
def whoami(reader: EventsReader) -> dict[str, Any]:
    return {"name": reader.name, "scopes": sorted(reader.scopes)}


@router.get("/task-runs")
def get_task_runs(
    reader: EventsReader,
    conn: SchedulesConn,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Scheduled export runs for the exports page: status, attempts, last error, file
    (no lead data: a read key may see them)."""
    return visible_runs(conn, reader, limit=limit)


@router.get("/flows")
def get_flows(conn: Bounded, reader: EventsReader) -> list[str]:
    return [f for f in flow_ids(conn) if reader.sees_flow(f)]


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=256)
    flow_id: str | None = Field(None, min_length=1, max_length=64)


@router.post("/leads/search", responses={**guarded(413), **answers(400)})
def search_leads(reader: EventsReader, conn: Bounded, search: Search) -> dict[str, Any]:
    """A lead id, an email or a phone number; ``kind`` says which the box was taken for.

    A POST: what an operator searches for is PII, and a URL ends up in access logs.
    """
    kind, _ = classify(search.q)
    found = find_leads(conn, search.q, only_flow(reader, search.flow_id))
    return {"kind": kind, "leads": disclose(conn, reader, "ui:search", found)}


@router.get("/flows/{flow_id}/leads")
def get_flow_leads(
    flow_id: str,
    reader: EventsReader,
    conn: Bounded,
    when: Range,
    type: EventType = "source.submitted",
    outcome: Outcome | None = None,
    before_id: Id = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Recent leads of a flow by one of their events; page on with ``before_id=next``."""
    only_flow(reader, flow_id)
    f = LeadFilter(flow_id, type, outcome, when.start, when.end, before_id, limit + 1)
    rows = browse_leads(conn, f)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "rows": disclose(conn, reader, "ui:flow-leads", rows),
        "next": rows[-1]["event_id"] if more else None,
    }


@router.get("/leads/{lead_id}", responses=answers(404))
def get_lead(
    lead_id: str,
    reader: EventsReader,
    conn: Bounded,
    after_id: Id = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    """The lead's current state and a page of its timeline (``next`` continues it)."""
    lead = lead_summary(conn, lead_id)
    if lead is None:
        raise HTTPException(404, detail=f"Unknown lead: {lead_id}")
    hide_foreign(reader, lead.get("flow_id"), f"Unknown lead: {lead_id}")
    events = timeline_page(conn, lead_id, after_id, limit)
    more = len(events) > limit
    events = events[:limit]
    return {
        "lead": disclose(conn, reader, "ui:lead", lead, [lead_id]),
        "events": disclose(conn, reader, "ui:lead", events),
        "next": events[-1]["id"] if more else None,
    }


def _event(conn: Connection, event_id: str, reader: Principal) -> dict[str, Any]:
    event = get_event(conn, event_id)
    if event is None:
        raise HTTPException(404, detail=f"Unknown event: {event_id}")
    hide_foreign(reader, event.get("flow_id"), f"Unknown event: {event_id}")
    return event


@router.get("/events/{event_id}", responses=answers(404))
def get_ui_event(event_id: str, reader: EventsReader, conn: Bounded) -> dict[str, Any]:
    """One full snapshot, masked for the reader, with the event before it (for a diff link)."""
    event = _event(conn, event_id, reader)
    return {
        "event": disclose(conn, reader, "ui:event", event),
        "previous_id": neighbour_before(conn, event_id),
    }


@router.get("/events/{event_id}/objects", responses=answers(404))
async def get_event_objects(
    event_id: str, request: Request, conn: Bounded, reader: EventsReader
) -> dict[str, Any]:
    """The event's raw object in each per-event destination of its flow, and if it is there."""
    event = await run_in_threadpool(_event, conn, event_id, reader)
    return await locate(request, event)


_TOP_LEVEL = ("type", "outcome", "reason", "step_id", "step_name", "cost", "revenue", "attempt")


def _side(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in ("id", "type", "outcome", "step_name", "timestamp")}


@router.get("/leads/{lead_id}/diff", responses=answers(404))
def get_diff(
    lead_id: str,
    reader: EventsReader,
    conn: Bounded,
    to: Annotated[str, Query(min_length=1, max_length=64)],
    from_: Annotated[str | None, Query(alias="from", min_length=1, max_length=64)] = None,
) -> Any:
    """What changed from event ``from`` to event ``to`` (default: the one before ``to``):
    the event's own fields, then ``vars`` added, removed and changed, and what ``to`` appended."""
    after = _event(conn, to, reader)
    from_ = from_ or neighbour_before(conn, to)
    if from_ is None:
        raise HTTPException(404, detail=f"Event {to} is the lead's first: nothing to compare")
    before = _event(conn, from_, reader)
    if before["lead_id"] != lead_id or after["lead_id"] != lead_id:
        raise HTTPException(404, detail=f"Lead {lead_id} has no such pair of events")
    fields = {
        k: {"before": before.get(k), "after": after.get(k)}
        for k in _TOP_LEVEL
        if before.get(k) != after.get(k)
    }
    answer = {
        "from": _side(before),
        "to": _side(after),
        "event_fields": fields,
        **diff_snapshots(before, after).as_dict(),
    }
    return disclose(conn, reader, "ui:diff", answer, [lead_id])


@router.get("/flows/{flow_id}/dashboard")
def get_dashboard(flow_id: str, reader: EventsReader, conn: Bounded, when: Range) -> Any:
    """Everything the flow dashboard draws, for ``start``..``end`` (default: the last 7 days)."""
    only_flow(reader, flow_id)
    return disclose(conn, reader, "ui:dashboard", dashboard(conn, flow_id, when))


@router.get("/flows/{flow_id}/insights")
def get_insights(flow_id: str, reader: EventsReader, conn: Bounded, when: Range) -> Any:
    """The analytics panels of the flow dashboard, from the analytics projection."""
    only_flow(reader, flow_id)
    return disclose(conn, reader, "ui:insights", insights(conn, flow_id, when))


@router.get("/calls")
def get_calls(request: Request) -> dict[str, Any]:
    """The calling workers' destinations: breaker, in flight, latency (``leadflow calls status``).

    No lead data: a destination is a scheme, host and port. ``configured`` false says
    the server knows no metrics URL to read (the page then says how to set one)."""
    urls = metrics_urls(request.app.state.settings)
    return {"configured": bool(urls), "sources": fetch_status(urls)}
