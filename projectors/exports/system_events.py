"""Writing a system event (``task_run.*``, ``storage.*``) to the outbox.

The row goes in the caller's transaction, beside the state change it reports, so the
event exists if and only if the change committed; a relay publishes the outbox to Kafka.
The table, ``system_event_outbox``, belongs to the engine state's migration 006 (the
lifecycle events' outbox); this is the one place exports write to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from engine.state.outbox import record_system_event


def emit_system_event(
    cur: psycopg.Cursor[Any],
    event_type: str,
    subject: str,
    data: dict[str, Any],
    occurred_at: datetime,
    reason: str | None = None,
    flow_id: str | None = None,
) -> None:
    """Queue ``event_type`` (``object.action``) about ``subject``; ``data`` is the resource
    object as it is now. ``cur`` is a cursor inside the state change's transaction; the
    event is stamped with the scheduler's clock (``occurred_at``), not the wall clock."""
    record_system_event(
        cur,
        event_type,
        subject=subject,
        data=data,
        flow_id=flow_id,
        reason=reason,
        occurred_at=occurred_at,
    )
