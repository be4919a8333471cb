"""Read the projection back: a lead's timeline, one event, counts per flow or per set of leads.

Every function takes a connection from ``projectors.store.connect``, whose
search_path is the projection's schema. Events come back as the
LeadConduit-style JSON the projector stored (``schemas.event_to_json_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projectors.store import Connection, translate_errors

EventCount = tuple[str, str, int]


def lead_timeline(conn: Connection, lead_id: str) -> list[dict[str, Any]]:
    """Every event of one lead, in timeline order (event ids sort that way); one index scan."""
    with translate_errors():
        rows = conn.execute(
            "SELECT snapshot FROM events WHERE lead_id = %s ORDER BY id", (lead_id,)
        ).fetchall()
    return [row[0] for row in rows]


def get_event(conn: Connection, event_id: str) -> dict[str, Any] | None:
    with translate_errors():
        row = conn.execute("SELECT snapshot FROM events WHERE id = %s", (event_id,)).fetchone()
    return None if row is None else dict(row[0])


def event_counts(conn: Connection, flow_id: str) -> list[EventCount]:
    """(type, outcome, count) of one flow's events, sorted by type then outcome."""
    with translate_errors():
        rows = conn.execute(
            "SELECT type, outcome, count(*) FROM events WHERE flow_id = %s"
            " GROUP BY type, outcome ORDER BY type, outcome",
            (flow_id,),
        ).fetchall()
    return [(str(t), str(o), int(n)) for t, o, n in rows]


def count_completed(conn: Connection, flow_id: str) -> int:
    """How many of the flow's leads have their ``flow.completed`` event projected."""
    with translate_errors():
        row = conn.execute(
            "SELECT count(*) FROM leads WHERE flow_id = %s AND completed", (flow_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def event_counts_for_leads(conn: Connection, lead_ids: Sequence[str]) -> list[EventCount]:
    """(type, outcome, count) over the events of these leads: a demo run among earlier ones."""
    with translate_errors():
        rows = conn.execute(
            "SELECT type, outcome, count(*) FROM events WHERE lead_id = ANY(%s)"
            " GROUP BY type, outcome ORDER BY type, outcome",
            (list(lead_ids),),
        ).fetchall()
    return [(str(t), str(o), int(n)) for t, o, n in rows]


def completed_count(conn: Connection, lead_ids: Sequence[str]) -> int:
    """How many of these leads have their ``flow.completed`` event projected."""
    with translate_errors():
        row = conn.execute(
            "SELECT count(*) FROM leads WHERE lead_id = ANY(%s) AND completed", (list(lead_ids),)
        ).fetchone()
    return int(row[0]) if row else 0
