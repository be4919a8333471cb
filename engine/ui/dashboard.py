"""The flow dashboard's data in one payload: the analytics queries of ``projectors.stats``
for one time range, with the range and bucket size chosen so a chart has tens of points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from projectors.params import TimeRange, iso_utc
from projectors.stats import (
    Interval,
    StatsQuery,
    event_stats,
    reason_analytics,
    recipient_analytics,
    source_analytics,
    step_analytics,
)
from projectors.store import Connection

DEFAULT_SPAN = timedelta(days=7)
TOP_REASONS = 10


def bounded(when: TimeRange, now: datetime | None = None) -> TimeRange:
    """An open range is closed: the aggregates below scan the range, so it is never all time."""
    end = when.end or (now or datetime.now(UTC))
    start = when.start or end - DEFAULT_SPAN
    return TimeRange(start, end)


def interval_for(when: TimeRange) -> Interval:
    assert when.start is not None and when.end is not None
    span = when.end - when.start
    if span <= timedelta(days=2):
        return "hour"
    if span <= timedelta(days=93):
        return "day"
    return "week"


def dashboard(conn: Connection, flow_id: str, when: TimeRange) -> dict[str, Any]:
    """Leads by final outcome per bucket, top rejection reasons, step durations, sources, buyers."""
    when = bounded(when)
    interval = interval_for(when)
    completed = event_stats(
        conn,
        StatsQuery(
            group_by=("outcome",),
            interval=interval,
            when=when,
            flow_id=flow_id,
            types=("flow.completed",),
        ),
    )
    assert when.start is not None and when.end is not None
    return {
        "flow_id": flow_id,
        "start": iso_utc(when.start),
        "end": iso_utc(when.end),
        "interval": interval,
        "outcomes": completed.rows,
        "reasons": reason_analytics(conn, flow_id, when, None, TOP_REASONS).rows,
        "steps": step_analytics(conn, flow_id, when).rows,
        "sources": source_analytics(conn, flow_id, when).rows,
        "recipients": recipient_analytics(conn, flow_id, when).rows,
    }
