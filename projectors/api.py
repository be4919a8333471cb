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

from engine.access.disclosure import disclose
from engine.access.guard import EVENTS_READ, EventsReader, hide_foreign, only_flow
from engine.access.scopes import Principal
from engine.settings import Settings
from engine.web.responses import answers, guarded
from projectors.diff import diff_snapshots
from projectors.errors import StoreUnavailableError
from projectors.params import Range, StrictQuery, cursor_error, query_error
from projectors.queries import get_event, lead_timeline
from projectors.search import EventQuery, UnknownCursorError, search_events
from projectors.selection import (
    FILTER_ALIASES,
    EventId,
    EventType,
    Outcome,
    SortOrder,
    canonical_filters,
)
from projectors.store import Connection, api_connection

router = APIRouter(
    tags=["events"],
    dependencies=[Depends(EVENTS_READ), StrictQuery],
    responses={**guarded(), **answers(503)},
)

# The filters' types are shared with the export routes and ``leadflow export``, so a value
# one of them refuses is refused by all, with the same message.
Id = Annotated[EventId | None, Query()]
Cursor = Annotated[EventId | None, Query(description="a stored event's id")]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _connection(settings: Annotated[Settings, Depends(_settings)]) -> Iterator[Connection]:
    """A connection for one request; every public query is cut off after
    ``api_statement_timeout_ms`` (a 503) rather than left running on the server."""
    try:
        with api_connection(settings) as conn:
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
    id: Annotated[list[EventId] | None, Query(max_length=100, description="event ids")] = None,
    event_id: Annotated[
        list[EventId] | None, Query(max_length=100, description="the same as id")
    ] = None,
    reason: Annotated[str | None, Query(max_length=1000, description="the exact reason")] = None,
    rejection_reason: Annotated[
        str | None, Query(max_length=1000, description="the same as reason")
    ] = None,
    min_ms: Annotated[int | None, Query(ge=0, description="took at least this long")] = None,
    min_duration_ms: Annotated[int | None, Query(ge=0, description="the same as min_ms")] = None,
) -> EventQuery:
    """The query parameters both events routes take; a filter under either of its names
    (README, "Field names"), never both."""
    given = {
        k: v
        for k, v in (
            ("id", id),
            ("event_id", event_id),
            ("reason", reason),
            ("rejection_reason", rejection_reason),
            ("min_ms", min_ms),
            ("min_duration_ms", min_duration_ms),
        )
        if v is not None
    }
    for alias, name in FILTER_ALIASES.items():
        if alias in given and name in given:
            message = f"{alias} and {name} are one filter: give only one of them"
            raise query_error(alias, message, given[alias])
    named = canonical_filters(given)
    return EventQuery(
        lead_id=lead_id,
        types=tuple(type or ()),
        outcome=outcome,
        step_id=step_id,
        ids=tuple(named.get("id") or ()),
        reason=named.get("reason"),
        min_ms=named.get("min_ms"),
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
def get_events(
    conn: Conn, query: Events, reader: EventsReader, flow_id: Id = None
) -> list[dict[str, Any]]:
    """Events of every flow, or of ``flow_id``: LeadConduit's ``GET /events``."""
    page = _page(conn, dataclasses.replace(query, flow_id=only_flow(reader, flow_id)))
    return disclose(conn, reader, "GET /events", page)  # type: ignore[no-any-return]


@router.get("/flows/{flow_id}/events")
def get_flow_events(
    flow_id: str, conn: Conn, query: Events, reader: EventsReader
) -> list[dict[str, Any]]:
    page = _page(conn, dataclasses.replace(query, flow_id=only_flow(reader, flow_id)))
    return disclose(conn, reader, "GET /flows/{flow_id}/events", page)  # type: ignore[no-any-return]


def _timeline(conn: Connection, lead_id: str, reader: Principal) -> list[dict[str, Any]]:
    events = lead_timeline(conn, lead_id)
    unknown = f"Unknown lead: {lead_id}"
    if not events:
        raise HTTPException(404, detail=unknown)
    hide_foreign(reader, events[0].get("flow_id"), unknown)
    return events


@router.get("/leads/{lead_id}/events", responses=answers(404))
def get_lead_events(lead_id: str, conn: Conn, reader: EventsReader) -> list[dict[str, Any]]:
    events = _timeline(conn, lead_id, reader)
    return disclose(conn, reader, "GET /leads/{lead_id}/events", events)  # type: ignore[no-any-return]


@router.get("/events/{event_id}", responses=answers(404))
def get_one_event(event_id: str, conn: Conn, reader: EventsReader) -> dict[str, Any]:
    event = get_event(conn, event_id)
    unknown = f"Unknown event: {event_id}"
    if event is None:
        raise HTTPException(404, detail=unknown)
    hide_foreign(reader, event.get("flow_id"), unknown)
    return disclose(conn, reader, "GET /events/{event_id}", event)  # type: ignore[no-any-return]


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
    lead_id: str, conn: Conn, reader: EventsReader, from_event: Id = None, to_event: Id = None
) -> list[dict[str, Any]]:
    """Each consecutive pair of the lead's events, or the one pair ``from_event`` -> ``to_event``.

    ``vars`` are diffed; ``appended`` is what the later event's step appended.
    """
    events = _timeline(conn, lead_id, reader)
    route = "GET /leads/{lead_id}/changes"
    if from_event is None and to_event is None:
        changes = [_change(a, b) for a, b in pairwise(events)]
        return disclose(conn, reader, route, changes, [lead_id])  # type: ignore[no-any-return]
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
    change = _change(by_id[from_event], by_id[to_event])
    return disclose(conn, reader, route, [change], [lead_id])  # type: ignore[no-any-return]
