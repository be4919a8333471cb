"""When a batched object closes: pure rotation rules over offsets, event time and size.

One object holds a contiguous run of one partition's records of one event-time
hour. Records, bytes, the hour and ``max_seconds`` of *event* time close it
deterministically: replaying the same records cuts the same objects, under the
same names. Only the idle timeout (a quiet partition, wall clock) is not
deterministic; the streamer recovers from that with the object's metadata
(``streamers.batched``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.destinations import BatchSettings


def hour_of(timestamp: datetime) -> datetime:
    """The start of the event-time hour a timestamp falls in."""
    return timestamp.replace(minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class BatchBounds:
    """What the rotation rules know of an open batch."""

    first_offset: int
    last_offset: int
    first_time: datetime
    opened_at: float  # monotonic seconds, for the idle timeout only
    records: int = 0
    bytes: int = 0

    @property
    def hour(self) -> datetime:
        return hour_of(self.first_time)

    def add(self, offset: int, size: int) -> None:
        self.last_offset = offset
        self.records += 1
        self.bytes += size


def closes_before(bounds: BatchBounds, event_time: datetime, settings: BatchSettings) -> bool:
    """Whether an event at ``event_time`` must start a new object instead of joining this one:
    it belongs to another hour, or ``max_seconds`` of event time have passed since the first.

    Earlier events (a partition's times are only roughly ordered) join the open
    object as long as they are in its hour.
    """
    if hour_of(event_time) != bounds.hour:
        return True
    return (event_time - bounds.first_time).total_seconds() >= settings.max_seconds


def is_full(bounds: BatchBounds, settings: BatchSettings) -> bool:
    """Whether the batch has reached its record count or byte size and closes now."""
    return bounds.records >= settings.max_records or bounds.bytes >= settings.max_bytes


def idle_expired(bounds: BatchBounds, now: float, settings: BatchSettings) -> bool:
    """Whether the batch has been open ``max_seconds`` of wall-clock time: a quiet partition
    must not hold its events back indefinitely."""
    return now - bounds.opened_at >= settings.max_seconds
