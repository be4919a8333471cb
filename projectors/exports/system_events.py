"""Writing a system event (``task_run.*``, ``storage.*``) to the outbox.

The row goes in the caller's transaction, beside the state change it reports, so the
event exists if and only if the change committed; a relay publishes the outbox to Kafka.
The table, ``system_event_outbox``, belongs to the engine state's migration 006 (the
lifecycle events' outbox); this is the one place exports write to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from engine.ids import new_lead_id

_INSERT = (
    "INSERT INTO system_event_outbox (id, type, flow_id, subject, data, reason, occurred_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def emit_system_event(
    cur: Any,
    event_type: str,
    subject: str,
    data: dict[str, Any],
    occurred_at: datetime,
    reason: str | None = None,
    flow_id: str | None = None,
) -> None:
    """Queue ``event_type`` (``object.action``) about ``subject``; ``data`` is the resource
    object as it is now. ``cur`` is a cursor inside the state change's transaction."""
    event_id = new_lead_id(int(occurred_at.timestamp() * 1000))
    cur.execute(_INSERT, (event_id, event_type, flow_id, subject, Jsonb(data), reason, occurred_at))
