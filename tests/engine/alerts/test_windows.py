"""Sliding windows: bucketed by the event's time, bounded however varied the reasons."""

from __future__ import annotations

from engine.alerts.samples import Sample
from engine.alerts.windows import (
    EXAMPLES_PER_BUCKET,
    MAX_REASONS_PER_BUCKET,
    OTHER_REASONS,
    SlidingWindow,
)

HOUR = 3_600_000
NOW = 1_800_000_000_000


def bad(at: int, reason: str = "Invalid", lead: str = "L") -> Sample:
    return Sample("flow", at, 1.0, True, reason, lead)


def test_the_window_forgets_what_slid_out_a_bucket_at_a_time() -> None:
    window = SlidingWindow(HOUR)
    assert window.bucket_ms == 60_000
    assert window.add(bad(NOW - HOUR + 1), NOW)  # in the oldest bucket still open
    assert window.add(bad(NOW - 1), NOW)
    assert window.read(NOW).count == 2
    assert window.read(NOW + 60_000).count == 1  # the oldest bucket ended
    window.prune(NOW + 60_000)
    assert len(window.buckets) == 1


def test_a_sample_older_than_the_window_is_not_counted() -> None:
    window = SlidingWindow(HOUR)
    assert not window.add(bad(NOW - 2 * HOUR), NOW)
    assert window.buckets == {}


def test_reasons_and_examples_are_bounded_per_bucket() -> None:
    window = SlidingWindow(HOUR)
    for n in range(MAX_REASONS_PER_BUCKET + 30):
        window.add(bad(NOW - 1, reason=f"Invalid value {n}", lead=f"L{n}"), NOW)
    reading = window.read(NOW)
    assert len(reading.reasons) == MAX_REASONS_PER_BUCKET + 1
    assert reading.reasons[0] == (OTHER_REASONS, 30)
    assert reading.examples == [f"L{n}" for n in range(45, 50)][-EXAMPLES_PER_BUCKET:]


def test_stored_and_read_back_it_is_the_same_window_unless_its_width_changed() -> None:
    window = SlidingWindow(HOUR)
    window.add(bad(NOW - 1, lead="L1"), NOW)
    stored = window.to_json()
    assert SlidingWindow.from_json(stored, HOUR).read(NOW) == window.read(NOW)
    assert SlidingWindow.from_json(stored, 2 * HOUR).read(NOW).count == 0
