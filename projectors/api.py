"""Read the timeline projection over HTTP: a flow's events, a lead's timeline, one event,
and what changed in a lead's data from one event to the next.

Query habits follow LeadConduit's events API: ``start`` inclusive and ``end``
exclusive ISO 8601 times, ``after_id``/``before_id`` exclusive keyset paging,
``limit`` 1..1000 (default 100), ``sort`` asc|desc (default desc), a bare
JSON array as the answer. Clients page with ``sort=asc`` + ``after_id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from engine.settings import Settings
from projectors.diff import diff_snapshots
from projectors.errors import StoreUnavailableError
from projectors.queries import get_event, lead_timeline
from projectors.search import EventFilter, flow_events
from projectors.store import Connection, connect

router = APIRouter(tags=["events"])

EventId = Annotated[str | None, Query(min_length=1, max_length=64)]


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


def _utc(value: datetime | None) -> datetime | None:
    # A time without an offset (or a bare date, "2024-01-15") is read as UTC,
    # not as the server's local time.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.get("/flows/{flow_id}/events")
def get_flow_events(
    flow_id: str,
    conn: Conn,
    lead_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    type: Annotated[list[str] | None, Query()] = None,
    outcome: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    start: Annotated[datetime | None, Query(description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(description="exclusive, ISO 8601")] = None,
    after_id: EventId = None,
    before_id: EventId = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    sort: Literal["asc", "desc"] = "desc",
) -> list[dict[str, Any]]:
    where = EventFilter(
        lead_id=lead_id,
        types=tuple(type or ()),
        outcome=outcome,
        start=_utc(start),
        end=_utc(end),
        after_id=after_id,
        before_id=before_id,
    )
    return flow_events(conn, flow_id, where, limit=limit, descending=sort == "desc")


def _timeline(conn: Connection, lead_id: str) -> list[dict[str, Any]]:
    events = lead_timeline(conn, lead_id)
    if not events:
        raise HTTPException(404, detail=f"Unknown lead: {lead_id}")
    return events


@router.get("/leads/{lead_id}/events")
def get_lead_events(lead_id: str, conn: Conn) -> list[dict[str, Any]]:
    return _timeline(conn, lead_id)


@router.get("/events/{event_id}")
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


@router.get("/leads/{lead_id}/changes")
def get_lead_changes(
    lead_id: str, conn: Conn, from_event: EventId = None, to_event: EventId = None
) -> list[dict[str, Any]]:
    """Each consecutive pair of the lead's events, or the one pair ``from_event`` -> ``to_event``.

    ``vars`` are diffed; ``appended`` is what the later event's step appended.
    """
    events = _timeline(conn, lead_id)
    if from_event is None and to_event is None:
        return [_change(a, b) for a, b in pairwise(events)]
    if from_event is None or to_event is None:
        raise HTTPException(422, detail="Give both from_event and to_event, or neither")
    by_id = {e["id"]: e for e in events}
    for wanted in (from_event, to_event):
        if wanted not in by_id:
            raise HTTPException(404, detail=f"Lead {lead_id} has no event {wanted}")
    return [_change(by_id[from_event], by_id[to_event])]
