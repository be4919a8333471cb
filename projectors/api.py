"""Read the timeline projection over HTTP: events by flow or across flows, a lead's timeline,
one event, and what changed in a lead's data from one event to the next.

Query habits follow LeadConduit's events API: ``start`` inclusive and ``end``
exclusive ISO 8601 times (UTC when they carry no offset), ``after_id``/``before_id``
exclusive cursors, ``limit`` 1..1000 (default 100), ``sort`` asc|desc (default
desc), a bare JSON array as the answer. Pages are in the order events were
stored (see ``projectors.search``), so a client that pages with ``sort=asc`` and
``after_id`` = the last id it got sees every event exactly once, late ones included.
Unknown query parameters are a 422, like bad values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from itertools import pairwise
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from engine.settings import Settings
from engine.web.responses import answers
from projectors.diff import diff_snapshots
from projectors.errors import StoreUnavailableError
from projectors.params import Range, StrictQuery, cursor_error, query_error
from projectors.queries import get_event, lead_timeline
from projectors.search import EventQuery, UnknownCursorError, search_events
from projectors.selection import EventId, EventType, Outcome, SortOrder
from projectors.store import Connection, connect

router = APIRouter(tags=["events"], dependencies=[StrictQuery], responses=answers(503))

# The filters' types are shared with the export routes and ``leadflow export``, so a value
# one of them refuses is refused by all, with the same message.
Id = Annotated[EventId | None, Query()]
Cursor = Annotated[EventId | None, Query(description="a stored event's id")]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _connection(settings: Annotated[Settings, Depends(_settings)]) -> Iterator[Connection]:
    try:
        with connect(settings, application_name="leadflow-api") as conn:
            yield conn
    except StoreUnavailableError as exc:
        raise HTTPException(503, detail="The event store is unavailable; retry later") from exc


Conn = Annotated[Connection, Depends(_connection)]


def _event_query(
    when: Range,
    lead_id: Id = None,
    type: Annotated[
        list[EventType] | None, Query(max_length=50, description="repeatable, e.g. source.accepted")
    ] = None,
    outcome: Outcome | None = None,
    step_id: Id = None,
    after_id: Cursor = None,
    before_id: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    sort: SortOrder = "desc",
) -> EventQuery:
    """The query parameters both events routes take."""
    return EventQuery(
        lead_id=lead_id,
        types=tuple(type or ()),
        outcome=outcome,
        step_id=step_id,
        start=when.start,
        end=when.end,
        after_id=after_id,
        before_id=before_id,
        limit=limit,
        descending=sort == "desc",
    )


Events = Annotated[EventQuery, Depends(_event_query)]


def _page(conn: Connection, query: EventQuery) -> list[dict[str, Any]]:
    try:
        return search_events(conn, query)
    except UnknownCursorError as exc:
        raise cursor_error(exc) from None


@router.get("/events")
def get_events(conn: Conn, query: Events, flow_id: Id = None) -> list[dict[str, Any]]:
    """Events of every flow, or of ``flow_id``: LeadConduit's ``GET /events``."""
    return _page(conn, dataclasses.replace(query, flow_id=flow_id))


@router.get("/flows/{flow_id}/events")
def get_flow_events(flow_id: str, conn: Conn, query: Events) -> list[dict[str, Any]]:
    return _page(conn, dataclasses.replace(query, flow_id=flow_id))


def _timeline(conn: Connection, lead_id: str) -> list[dict[str, Any]]:
    events = lead_timeline(conn, lead_id)
    if not events:
        raise HTTPException(404, detail=f"Unknown lead: {lead_id}")
    return events


@router.get("/leads/{lead_id}/events", responses=answers(404))
def get_lead_events(lead_id: str, conn: Conn) -> list[dict[str, Any]]:
    return _timeline(conn, lead_id)


@router.get("/events/{event_id}", responses=answers(404))
def get_one_event(event_id: str, conn: Conn) -> dict[str, Any]:
    event = get_event(conn, event_id)
    if event is None:
        raise HTTPException(404, detail=f"Unknown event: {event_id}")
    return event


def _change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": before["id"],
        "to": after["id"],
        "from_type": before["type"],
        "to_type": after["type"],
        **diff_snapshots(before, after).as_dict(),
    }


@router.get("/leads/{lead_id}/changes", responses=answers(404))
def get_lead_changes(
    lead_id: str, conn: Conn, from_event: Id = None, to_event: Id = None
) -> list[dict[str, Any]]:
    """Each consecutive pair of the lead's events, or the one pair ``from_event`` -> ``to_event``.

    ``vars`` are diffed; ``appended`` is what the later event's step appended.
    """
    events = _timeline(conn, lead_id)
    if from_event is None and to_event is None:
        return [_change(a, b) for a, b in pairwise(events)]
    if from_event is None or to_event is None:
        raise query_error(
            "to_event" if to_event is None else "from_event",
            "Give both from_event and to_event, or neither",
            from_event or to_event,
        )
    by_id = {e["id"]: e for e in events}
    for wanted in (from_event, to_event):
        if wanted not in by_id:
            raise HTTPException(404, detail=f"Lead {lead_id} has no event {wanted}")
    return [_change(by_id[from_event], by_id[to_event])]
