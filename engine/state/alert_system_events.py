"""An alert's ``alert.triggered``/``alert.resolved`` as a row of the system event outbox.

The outbox (``system_event_outbox``, state migration 006) is shared: a row written in the
same transaction as the state change it reports, published to Kafka by its relay. This
one function is all the alerts know of it, so the outbox's own writer can replace it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from engine.state.postgres import Cursor

_INSERT = """
INSERT INTO system_event_outbox (id, type, flow_id, subject, data, reason, occurred_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""


def record_system_event(
    cur: Cursor,
    *,
    event_id: str,
    event_type: str,
    flow_id: str | None,
    subject: str,
    data: dict[str, Any],
    reason: str | None,
    occurred_at: datetime,
) -> None:
    """Queue one system event in the caller's transaction (its relay publishes it)."""
    cur.execute(_INSERT, (event_id, event_type, flow_id, subject, Jsonb(data), reason, occurred_at))
