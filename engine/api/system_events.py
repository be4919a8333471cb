"""``GET /system-events``: leadflow's own ``object.action`` events (flows, destinations,
export runs) over HTTP, read from the system events outbox in Postgres.

Postgres, not a projection of ``leadflow.system-events``: the outbox already holds every
event once (its id is the primary key, where the topic may carry a relay's retry twice),
in the order the relay published them (``published_seq``), with nothing more to run.
Only published events are listed, so this API and the topic show the same sequence; a
client that pages with ``after_id`` = the last id it got sees each event exactly once.

Scope ``flows:admin``: the events carry whole flow definitions (buyers' endpoints,
mappings, rules, credential references) and destinations' settings - configuration that
an ``events:read`` key (a dashboard, an analyst reading leads) is not given anywhere else.
A key restricted to flows sees only its flows' events (events of no flow not at all).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from engine.access.guard import FLOWS_ADMIN
from engine.access.scopes import Principal
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.outbox import UnknownSystemEventError, published_events
from engine.state.postgres import connect, migrate_state
from engine.web.responses import answers, guarded
from projectors.params import StrictQuery, query_error
from projectors.selection import EventId, EventType

router = APIRouter(
    tags=["system events"],
    dependencies=[StrictQuery],
    responses={**guarded(), **answers(503)},
)

_migrated: set[tuple[str, str]] = set()


def _read(
    settings: Settings,
    types: list[str],
    after_id: str | None,
    flows: frozenset[str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    marker = (settings.database_url.get_secret_value(), settings.db_schema)
    if marker not in _migrated:  # a fresh database: an empty list, not a 503
        migrate_state(settings)
        _migrated.add(marker)
    with connect(settings, statement_timeout_ms=settings.api_statement_timeout_ms) as conn:
        page = published_events(conn, types=types, after_id=after_id, flows=flows, limit=limit)
    return [event.as_json() for event in page]


@router.get("/system-events")
def get_system_events(
    request: Request,
    admin: Annotated[Principal, Depends(FLOWS_ADMIN)],
    type: Annotated[
        list[EventType] | None,
        Query(max_length=50, description="repeatable, e.g. event_destination.deactivated"),
    ] = None,
    after_id: Annotated[EventId | None, Query(description="a listed event's id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """System events in the order they were published, oldest first, after ``after_id``."""
    settings: Settings = request.app.state.settings
    try:
        return _read(settings, list(type or ()), after_id, admin.flows, limit)
    except UnknownSystemEventError:
        message = f"Unknown event id {after_id!r}: a cursor must be a listed system event's id"
        raise query_error("after_id", message, after_id) from None
    except StateUnavailableError as exc:
        raise HTTPException(503, detail="The event store is unavailable; retry later") from exc
