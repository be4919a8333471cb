"""Specification of when a batched object closes: records, bytes, event-time hour and
``max_seconds`` of event time; the idle timeout is wall clock and only for quiet partitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.destinations import BatchSettings
from streamers.batches import BatchBounds, closes_before, hour_of, idle_expired, is_full

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
SETTINGS = BatchSettings(max_records=3, max_bytes=1024, max_seconds=60)


def bounds(first_time: datetime = T0, opened_at: float = 100.0) -> BatchBounds:
    b = BatchBounds(first_offset=7, last_offset=7, first_time=first_time, opened_at=opened_at)
    b.add(7, 100)
    return b


def test_the_hour_is_the_event_times_hour() -> None:
    assert hour_of(T0) == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_an_event_of_the_same_hour_within_max_seconds_joins_the_object() -> None:
    assert not closes_before(bounds(), T0 + timedelta(seconds=59), SETTINGS)


def test_an_earlier_event_of_the_same_hour_joins_the_object() -> None:
    assert not closes_before(bounds(), T0 - timedelta(minutes=10), SETTINGS)


def test_max_seconds_of_event_time_close_the_object() -> None:
    assert closes_before(bounds(), T0 + timedelta(seconds=60), SETTINGS)


def test_another_hour_closes_the_object_even_within_max_seconds() -> None:
    late = bounds(first_time=datetime(2026, 3, 1, 10, 59, 50, tzinfo=UTC))
    assert closes_before(late, datetime(2026, 3, 1, 11, 0, 1, tzinfo=UTC), SETTINGS)
    assert closes_before(bounds(), datetime(2026, 3, 1, 9, 59, tzinfo=UTC), SETTINGS)


def test_the_record_count_fills_an_object() -> None:
    b = bounds()
    b.add(8, 10)
    assert not is_full(b, SETTINGS)
    b.add(9, 10)
    assert is_full(b, SETTINGS)
    assert (b.first_offset, b.last_offset, b.records, b.bytes) == (7, 9, 3, 120)


def test_the_byte_size_fills_an_object() -> None:
    b = bounds()
    b.add(8, 924)
    assert is_full(b, SETTINGS)


def test_a_quiet_partitions_object_closes_after_max_seconds_open() -> None:
    assert not idle_expired(bounds(opened_at=100.0), 159.9, SETTINGS)
    assert idle_expired(bounds(opened_at=100.0), 160.0, SETTINGS)
