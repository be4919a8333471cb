"""The dashboard's analytics panels (seed 002) in one payload, from the analytics projection's
hourly and per-lead rows (``projectors.insights``), never from the range's events: a week
of a busy flow costs a few rows per hour and step, and the leads submitted in the range.

Kept apart from ``engine.ui.dashboard`` (one request each), so the panels that read events
and the ones that read the projection can be judged, and fail, on their own.
"""

from __future__ import annotations

from typing import Any

from engine.ui.dashboard import bounded
from projectors.insights import (
    buyer_behaviour,
    buyer_hours,
    enhancement_value,
    rejections,
    source_performance,
    step_performance,
)
from projectors.params import TimeRange, iso_utc
from projectors.store import Connection

TOP_REJECTIONS = 15


def insights(conn: Connection, flow_id: str, when: TimeRange) -> dict[str, Any]:
    """Step performance, rejections by source, enhancement value, sources and buyers for
    ``when`` (default: the last 7 days, as the dashboard)."""
    when = bounded(when)
    assert when.start is not None and when.end is not None
    return {
        "flow_id": flow_id,
        "start": iso_utc(when.start),
        "end": iso_utc(when.end),
        "steps": step_performance(conn, flow_id, when).rows,
        "step_hours": step_performance(conn, flow_id, when, per_hour=True).rows,
        "rejections": rejections(conn, flow_id, when, limit=TOP_REJECTIONS).rows,
        "enhancements": enhancement_value(conn, flow_id, when).rows,
        "sources": source_performance(conn, flow_id, when).rows,
        "buyers": buyer_behaviour(conn, flow_id, when).rows,
        "buyer_hours": buyer_hours(conn, flow_id, when).rows,
    }
