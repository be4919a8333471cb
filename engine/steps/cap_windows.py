"""Cap windows: the period of a cap that a lead's submission time falls in.

Computed from the lead's submission time, never the wall clock, so a retry or
a replay puts a lead in the same window as its first run. Calendar windows
follow the cap's time zone: a day starts at local midnight, a week on Monday,
a month on the 1st - and so last 23 or 25 hours across a DST change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import assert_never
from zoneinfo import ZoneInfo

from engine.caps import Duration

_CLOCK_MS = {"minute": 60_000, "hour": 3_600_000}


@dataclass(frozen=True, slots=True)
class Window:
    """``[start_ms, end_ms)`` in epoch milliseconds."""

    start_ms: int
    end_ms: int

    def __contains__(self, at_ms: object) -> bool:
        return isinstance(at_ms, int) and self.start_ms <= at_ms < self.end_ms


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _local_midnight(day: date, zone: ZoneInfo) -> int:
    # fold=0 picks the first of two midnights after a fall-back; a midnight
    # skipped by a spring-forward (e.g. Sao Paulo until 2019) resolves with the
    # offset before the gap, which is exactly the first instant of that day.
    return _epoch_ms(datetime.combine(day, time(0), tzinfo=zone))


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def window_for(duration: Duration, time_zone: str, at_ms: int) -> Window:
    """The window of ``duration`` in ``time_zone`` that contains the instant ``at_ms``."""
    zone = ZoneInfo(time_zone)
    local = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(zone)
    if duration == "minute" or duration == "hour":
        # Minutes and hours are fixed lengths, aligned to the local clock in
        # force at the lead's instant (Asia/Kolkata hours start at :30 UTC). The
        # repeated hour after a fall-back is its own window, not merged into one.
        size = _CLOCK_MS[duration]
        offset = local.utcoffset()
        offset_ms = int(offset.total_seconds() * 1000) if offset is not None else 0
        start = at_ms - (at_ms + offset_ms) % size
        return Window(start, start + size)
    today = local.date()
    if duration == "day":
        first, following = today, today + timedelta(days=1)
    elif duration == "week":
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
    elif duration == "month":
        first = today.replace(day=1)
        following = _next_month(first)
    else:
        assert_never(duration)
    return Window(_local_midnight(first, zone), _local_midnight(following, zone))
