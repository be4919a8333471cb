"""Time and date rules: judged in a named time zone, against the lead's own submission
time (never the wall clock), so a replayed lead gets the same decision.

America/Chicago is UTC-6 in winter (CST) and UTC-5 in summer (CDT); in 2024 it
sprang forward on 10 March (02:00 CST -> 03:00 CDT, at 08:00Z) and fell back on
3 November (02:00 CDT -> 01:00 CST, at 07:00Z).
"""

from datetime import datetime
from typing import Any

import pytest

from engine.steps.filter import FilterSettings, evaluate_filter


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def judge(rule: dict[str, Any], submitted: str, **fields: Any) -> tuple[bool, str | None]:
    snapshot = {"submission.timestamp": ms(submitted)} | {f"lead.{k}": v for k, v in fields.items()}
    result = evaluate_filter(snapshot, FilterSettings.model_validate({"rules": [rule]}), "t")
    return result.proceed, result.last.reason


def holds(rule: dict[str, Any], submitted: str, **fields: Any) -> bool:
    return judge(rule, submitted, **fields)[0]


OFFICE = {
    "name": "Office hours",
    "op": "time_of_day",
    "from": "09:00",
    "to": "17:00",
    "time_zone": "America/Chicago",
}
NIGHT = {"op": "time_of_day", "from": "22:00", "to": "06:00", "time_zone": "America/New_York"}


# --- time_of_day -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("submitted", "expected"),
    [
        ("2024-01-15T14:59:59+00:00", False),  # 08:59:59 CST
        ("2024-01-15T15:00:00+00:00", True),  # 09:00 CST: the start is inside
        ("2024-01-15T22:59:59+00:00", True),  # 16:59:59 CST
        ("2024-01-15T23:00:00+00:00", False),  # 17:00 CST: the end is outside
        ("2024-07-15T14:00:00+00:00", True),  # 09:00 CDT: the same UTC hour, summer time
        ("2024-07-15T13:59:00+00:00", False),  # 08:59 CDT
        ("2024-07-15T22:00:00+00:00", False),  # 17:00 CDT
    ],
)
def test_time_of_day_is_judged_on_the_submission_time_in_the_zone(
    submitted: str, expected: bool
) -> None:
    assert holds(OFFICE, submitted) is expected


def test_the_same_utc_instant_is_inside_in_summer_and_outside_in_winter() -> None:
    assert not holds(OFFICE, "2024-01-15T14:30:00+00:00")  # 08:30 CST
    assert holds(OFFICE, "2024-07-15T14:30:00+00:00")  # 09:30 CDT


def test_the_reason_shows_the_local_time_it_judged() -> None:
    ok, why = judge(OFFICE, "2024-01-15T23:30:00+00:00")
    assert not ok
    assert why == (
        f"Office hours: submission.timestamp is {ms('2024-01-15T23:30:00+00:00')} "
        "(Mon 2024-01-15 17:30 CST)"
    )


@pytest.mark.parametrize(
    ("submitted", "expected"),
    [
        ("2024-01-16T02:59:00+00:00", False),  # 21:59 EST
        ("2024-01-16T03:00:00+00:00", True),  # 22:00 EST: the start is inside
        ("2024-01-16T03:00:01+00:00", True),  # 22:00:01 EST
        ("2024-01-16T04:30:00+00:00", True),  # 23:30 EST
        ("2024-01-16T05:00:00+00:00", True),  # 00:00 EST
        ("2024-01-16T10:59:00+00:00", True),  # 05:59 EST
        ("2024-01-16T11:00:00+00:00", False),  # 06:00 EST: the end is outside
        ("2024-01-16T17:00:00+00:00", False),  # 12:00 EST
    ],
)
def test_windows_that_wrap_midnight(submitted: str, expected: bool) -> None:
    assert holds(NIGHT, submitted) is expected


def test_a_wrapping_window_and_its_reverse_split_the_day() -> None:
    day = {**NIGHT, "from": "06:00", "to": "22:00"}
    for hour in range(24):
        instant = f"2024-01-16T{hour:02d}:17:00+00:00"
        assert holds(NIGHT, instant) is not holds(day, instant)


def test_spring_forward_the_missing_hour_never_matches() -> None:
    gap = {"op": "time_of_day", "from": "02:00", "to": "03:00", "time_zone": "America/Chicago"}
    for minute in range(0, 120, 5):  # 07:00Z to 08:55Z covers 01:00 CST to 03:55 CDT
        instant = f"2024-03-10T{7 + minute // 60:02d}:{minute % 60:02d}:00+00:00"
        assert not holds(gap, instant)
    assert holds({**gap, "from": "01:00", "to": "02:00"}, "2024-03-10T07:59:00+00:00")
    assert holds({**gap, "from": "03:00", "to": "04:00"}, "2024-03-10T08:00:00+00:00")


def test_fall_back_the_repeated_hour_matches_both_times() -> None:
    repeated = {"op": "time_of_day", "from": "01:00", "to": "02:00", "time_zone": "America/Chicago"}
    assert holds(repeated, "2024-11-03T06:30:00+00:00")  # 01:30 CDT
    assert holds(repeated, "2024-11-03T07:30:00+00:00")  # 01:30 CST, an hour later
    assert not holds(repeated, "2024-11-03T08:00:00+00:00")  # 02:00 CST


def test_time_of_day_on_a_lead_field() -> None:
    rule = {**OFFICE, "field": "lead.callback_at"}
    at = "2024-01-15T08:00:00+00:00"  # submitted at night; the callback time is what counts
    assert holds(rule, at, callback_at="2024-01-15T15:30:00.000Z")  # 09:30 CST
    assert not holds(rule, at, callback_at="2024-01-15T14:30:00.000Z")  # 08:30 CST
    # A time written without a zone is a wall-clock time: taken as written.
    assert holds(rule, at, callback_at="2024-01-15T09:30:00.000")
    # A bare date has no time of day, and a missing field none either.
    assert not holds(rule, at, callback_at="2024-01-15")
    ok, why = judge(rule, at)
    assert (ok, why) == (False, "Office hours: lead.callback_at is missing (not a date)")


# --- day_of_week -----------------------------------------------------------------


def test_day_of_week_is_the_day_in_the_zone() -> None:
    friday_night = "2024-01-20T04:30:00+00:00"  # Friday 23:30 in New York, Saturday in UTC
    weekdays = {"op": "day_of_week", "value": ["mon", "tue", "wed", "thu", "fri"]}
    assert holds({**weekdays, "time_zone": "America/New_York"}, friday_night)
    assert not holds({**weekdays, "time_zone": "UTC"}, friday_night)


def test_days_may_be_spelled_out_in_any_case() -> None:
    rule = {"op": "day_of_week", "value": ["Saturday", "SUN"], "time_zone": "Europe/London"}
    assert holds(rule, "2024-06-01T12:00:00+00:00")  # a Saturday
    assert not holds(rule, "2024-06-03T12:00:00+00:00")  # a Monday
    _, why = judge(rule, "2024-06-03T12:00:00+00:00")
    assert why is not None and why.startswith(
        "submission.timestamp day_of_week Saturday, SUN Europe/London: submission.timestamp is "
    )
    assert why.endswith("(Mon 2024-06-03 13:00 BST)")


def test_day_of_week_of_a_date_field() -> None:
    rule = {"field": "lead.moving_on", "op": "day_of_week", "value": ["sat"], "time_zone": "UTC"}
    assert holds(rule, "2024-01-01T00:00:00+00:00", moving_on="2024-06-01")


# --- before / after a date ---------------------------------------------------------

BORN_BEFORE_2000 = {"field": "lead.dob", "op": "before", "value": "2000-01-01"}


@pytest.mark.parametrize(
    ("dob", "before", "after"),
    [
        ("1999-12-31", True, False),
        ("2000-01-01", False, False),  # the date itself is neither
        ("2000-01-02", False, True),
        ("not a date", False, False),
    ],
)
def test_before_and_after_are_strict(dob: str, before: bool, after: bool) -> None:
    at = "2024-01-01T00:00:00+00:00"
    assert holds(BORN_BEFORE_2000, at, dob=dob) is before
    assert holds({**BORN_BEFORE_2000, "op": "after"}, at, dob=dob) is after


def test_a_time_is_compared_by_its_date_in_the_zone() -> None:
    at = "2024-02-01T00:00:00+00:00"
    rule = {"field": "lead.seen_at", "op": "before", "value": "2024-01-01"}
    seen = "2024-01-01T03:00:00.000Z"  # still 31 December in Chicago
    assert not holds(rule, at, seen_at=seen)
    assert holds({**rule, "time_zone": "America/Chicago"}, at, seen_at=seen)


def test_before_accepts_epoch_milliseconds() -> None:
    rule = {"field": "lead.seen_at", "op": "before", "value": "2024-01-01"}
    assert holds(rule, "2024-02-01T00:00:00+00:00", seen_at=ms("2023-12-31T12:00:00+00:00"))


# --- older_than / newer_than, relative to submission -------------------------------

CONSENT = {"name": "Fresh consent", "field": "lead.consent_at", "op": "newer_than", "days": 30}
SUBMITTED = "2024-06-15T12:00:00+00:00"


@pytest.mark.parametrize(
    ("consent_at", "fresh"),
    [
        ("2024-06-15T11:00:00.000Z", True),
        ("2024-05-16T12:00:00.001Z", True),  # a millisecond under 30 days
        ("2024-05-16T12:00:00.000Z", False),  # exactly 30 days: older_than, not newer_than
        ("2023-06-15T12:00:00.000Z", False),
        ("2024-06-16T12:00:00.000Z", True),  # after submission counts as new
    ],
)
def test_age_is_measured_back_from_the_submission(consent_at: str, fresh: bool) -> None:
    assert holds(CONSENT, SUBMITTED, consent_at=consent_at) is fresh
    assert holds({**CONSENT, "op": "older_than"}, SUBMITTED, consent_at=consent_at) is not fresh


def test_the_same_lead_is_judged_by_when_it_was_submitted_not_by_today() -> None:
    consent = "2024-05-01T00:00:00.000Z"
    assert holds(CONSENT, "2024-05-20T00:00:00+00:00", consent_at=consent)
    assert not holds(CONSENT, "2024-07-20T00:00:00+00:00", consent_at=consent)


def test_bare_dates_count_calendar_days_in_the_zone() -> None:
    rule = {"field": "lead.signed_on", "op": "older_than", "days": 1}
    at = "2024-06-15T03:00:00+00:00"  # still 14 June in Los Angeles
    assert holds(rule, at, signed_on="2024-06-14")
    assert not holds({**rule, "time_zone": "America/Los_Angeles"}, at, signed_on="2024-06-14")


def test_the_reason_says_how_old_the_value_was() -> None:
    ok, why = judge(CONSENT, SUBMITTED, consent_at="2024-04-01T00:00:00.000Z")
    assert not ok
    assert why == (
        "Fresh consent: lead.consent_at is '2024-04-01T00:00:00.000Z' (75 days before submission)"
    )


def test_without_a_submission_time_age_rules_fail_and_say_so() -> None:
    settings = FilterSettings.model_validate({"rules": [CONSENT]})
    result = evaluate_filter({"lead.consent_at": "2024-06-01"}, settings, "t")
    assert not result.proceed
    assert result.last.reason == (
        "Fresh consent: lead.consent_at is '2024-06-01' (no submission.timestamp)"
    )
