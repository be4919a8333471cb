"""The deliveries buyer feedback refers to, read from the timeline projection for the
feedback worker (``engine.runtime.handlers.feedback.Deliveries``)."""

from __future__ import annotations

from typing import Any

from engine.settings import Settings
from projectors.queries import get_event, lead_timeline
from projectors.store import Connection, connect

Event = dict[str, Any]


class TimelineDeliveries:
    """One connection, opened on first use and again after a failure."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Connection | None = None

    def find(self, event_id: str) -> tuple[Event | None, list[Event]]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.settings, application_name="leadflow-feedback")
            event = get_event(self._conn, event_id)
            if event is None:
                return None, []
            return event, lead_timeline(self._conn, str(event["lead_id"]))
        except Exception:
            self.close()  # the next feedback reconnects
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
