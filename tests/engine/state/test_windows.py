"""Cap windows: which period a lead's submission time falls in, in the cap's time zone."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from engine.caps import Duration
from engine.steps.cap_windows import Window, window_for


def ms(text: str) -> int:
    """Epoch ms of an ISO timestamp with its offset, e.g. ``2026-03-08T01:59:59.999-06:00``."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def window(start: str, end: str) -> Window:
    return Window(ms(start), ms(end))


def test_a_minute_starts_on_the_minute() -> None:
    at = ms("2026-03-04T12:34:56.789+00:00")
    assert window_for("minute", "UTC", at) == window(
        "2026-03-04T12:34:00+00:00", "2026-03-04T12:35:00+00:00"
    )


def test_an_hour_follows_the_local_clock_even_at_half_hour_offsets() -> None:
    # India is UTC+05:30: its hours start at :30 past the UTC hour.
    at = ms("2026-03-04T10:10:00+00:00")  # 15:40 in Kolkata
    assert window_for("hour", "Asia/Kolkata", at) == window(
        "2026-03-04T15:00:00+05:30", "2026-03-04T16:00:00+05:30"
    )


def test_the_repeated_hour_after_a_fall_back_is_a_window_of_its_own() -> None:
    # New York, 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    first = window_for("hour", "America/New_York", ms("2026-11-01T01:30:00-04:00"))
    second = window_for("hour", "America/New_York", ms("2026-11-01T01:30:00-05:00"))
    assert first == window("2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00")
    assert second == window("2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00")


def test_an_hour_right_after_a_spring_forward() -> None:
    # Chicago, 2026-03-08: 02:00 CST jumps to 03:00 CDT.
    before = window_for("hour", "America/Chicago", ms("2026-03-08T01:59:59.999-06:00"))
    after = window_for("hour", "America/Chicago", ms("2026-03-08T03:00:00-05:00"))
    assert before.end_ms == after.start_ms == ms("2026-03-08T03:00:00-05:00")


def test_a_day_starts_at_local_midnight_not_utc_midnight() -> None:
    zone = "America/Chicago"
    late = ms("2026-03-10T23:59:59.999-05:00")  # already 2026-03-11 in UTC
    assert window_for("day", zone, late) == window(
        "2026-03-10T00:00:00-05:00", "2026-03-11T00:00:00-05:00"
    )
    midnight = ms("2026-03-11T00:00:00-05:00")
    assert window_for("day", zone, midnight).start_ms == midnight


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-08T12:00:00-05:00", 23), ("2026-11-01T12:00:00-06:00", 25)],
    ids=["spring-forward", "fall-back"],
)
def test_a_day_across_a_dst_change_is_23_or_25_hours(day: str, hours: int) -> None:
    found = window_for("day", "America/Chicago", ms(day))
    assert found.end_ms - found.start_ms == hours * 3_600_000
    assert found.start_ms == ms(
        day[:10] + ("T00:00:00-06:00" if hours == 23 else "T00:00:00-05:00")
    )


def test_a_day_whose_midnight_does_not_exist_starts_at_its_first_instant() -> None:
    # Sao Paulo, 2018-11-04: clocks went from 00:00 straight to 01:00 (-03 -> -02).
    found = window_for("day", "America/Sao_Paulo", ms("2018-11-04T12:00:00-02:00"))
    assert found == window("2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00")


def test_a_week_starts_on_monday_in_the_caps_zone() -> None:
    zone = "Europe/Berlin"
    sunday_night = ms("2026-03-15T23:30:00+01:00")  # a Sunday
    assert window_for("week", zone, sunday_night) == window(
        "2026-03-09T00:00:00+01:00", "2026-03-16T00:00:00+01:00"
    )
    monday = ms("2026-03-16T00:00:00+01:00")
    assert window_for("week", zone, monday).start_ms == monday
    # The week with the spring-forward (2026-03-29) is an hour short.
    dst_week = window_for("week", zone, ms("2026-03-25T12:00:00+01:00"))
    assert dst_week.end_ms - dst_week.start_ms == 7 * 86_400_000 - 3_600_000


def test_a_month_starts_on_the_first_and_wraps_the_year() -> None:
    zone = "America/Los_Angeles"
    last_moment = ms("2026-01-31T23:59:59.999-08:00")  # February in UTC
    assert window_for("month", zone, last_moment) == window(
        "2026-01-01T00:00:00-08:00", "2026-02-01T00:00:00-08:00"
    )
    assert window_for("month", zone, ms("2026-12-15T00:00:00-08:00")) == window(
        "2026-12-01T00:00:00-08:00", "2027-01-01T00:00:00-08:00"
    )
    march = window_for("month", zone, ms("2026-03-15T00:00:00-07:00"))  # DST starts 03-08
    assert march.end_ms - march.start_ms == 31 * 86_400_000 - 3_600_000


ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Sydney"]
DURATIONS: list[Duration] = ["minute", "hour", "day", "week", "month"]


def test_windows_contain_their_instant_and_tile_time_without_gaps() -> None:
    rng = random.Random(5)
    start, end = ms("2025-01-01T00:00:00+00:00"), ms("2028-01-01T00:00:00+00:00")
    for _ in range(3000):
        at = rng.randrange(start, end)
        zone, duration = rng.choice(ZONES), rng.choice(DURATIONS)
        found = window_for(duration, zone, at)
        assert at in found, (zone, duration, datetime.fromtimestamp(at / 1000, UTC))
        # Every instant of a window maps to that window; the next one starts at its end.
        assert window_for(duration, zone, found.start_ms) == found
        assert window_for(duration, zone, found.end_ms - 1) == found
        assert window_for(duration, zone, found.end_ms).start_ms == found.end_ms
