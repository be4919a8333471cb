"""Properties of the rule language that must hold for every lead, not just the examples."""

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.fields import parse_date, parse_datetime, parse_ssn
from engine.steps.filter import FilterSettings

ZONES = ["UTC", "America/Chicago", "America/New_York", "Europe/London", "Australia/Lord_Howe"]
clock = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
instants = st.integers(0, 4_102_444_800_000)  # 1970 to 2100, epoch ms
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["TX", "tx", "42", "42.0", "", " ", "a@b.c"]),
    st.text(max_size=8),
)
snapshots = st.fixed_dictionaries({}, optional={"lead.x": scalars, "lead.y": scalars})


def holds(rule: dict[str, Any], snapshot: dict[str, Any]) -> bool:
    return FilterSettings.model_validate({"rules": [rule]}).check(snapshot) is None


@settings(max_examples=300, deadline=None)
@given(start=clock, end=clock, zone=st.sampled_from(ZONES), at=instants)
def test_a_window_and_its_reverse_split_every_instant(
    start: str, end: str, zone: str, at: int
) -> None:
    if start == end:
        return
    window = {"op": "time_of_day", "from": start, "to": end, "time_zone": zone}
    reverse = {**window, "from": end, "to": start}
    snapshot = {"submission.timestamp": at}
    assert holds(window, snapshot) is not holds(reverse, snapshot)


@settings(max_examples=200, deadline=None)
@given(
    days=st.integers(0, 400),
    zone=st.sampled_from(ZONES),
    at=instants,
    offset_ms=st.integers(-(10**11), 10**11),
    as_date=st.booleans(),
)
def test_every_readable_value_is_either_older_or_newer(
    days: int, zone: str, at: int, offset_ms: int, as_date: bool
) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at + offset_ms)
    value = moment.date().isoformat() if as_date else moment.isoformat()
    snapshot = {"submission.timestamp": at, "lead.x": value}
    older = {"field": "lead.x", "op": "older_than", "days": days, "time_zone": zone}
    assert holds(older, snapshot) is not holds({**older, "op": "newer_than"}, snapshot)


@settings(max_examples=300, deadline=None)
@given(snapshot=snapshots, wanted=st.lists(scalars.filter(lambda v: v is not None), min_size=1))
def test_in_and_not_in_are_complements(snapshot: dict[str, Any], wanted: list[Any]) -> None:
    for ignore_case in (False, True):
        rule = {"field": "lead.x", "op": "in", "value": wanted, "ignore_case": ignore_case}
        assert holds(rule, snapshot) is not holds({**rule, "op": "not_in"}, snapshot)


@settings(max_examples=300, deadline=None)
@given(snapshot=snapshots, wanted=scalars.filter(lambda v: v is not None))
def test_equals_is_in_with_one_value(snapshot: dict[str, Any], wanted: Any) -> None:
    equals = {"field": "lead.x", "op": "equals", "value": wanted}
    assert holds(equals, snapshot) is holds({**equals, "op": "in", "value": [wanted]}, snapshot)
    assert holds(equals, snapshot) is not holds({**equals, "op": "not_equals"}, snapshot)


@settings(max_examples=300, deadline=None)
@given(snapshot=snapshots, low=st.integers(-50, 50), high=st.integers(-50, 50))
def test_groups_obey_de_morgan(snapshot: dict[str, Any], low: int, high: int) -> None:
    a = {"field": "lead.x", "op": "gte", "value": low}
    b = {"field": "lead.y", "op": "lte", "value": high}
    not_all = {"not": {"all": [a, b]}}
    any_not = {"any": [{"not": a}, {"not": b}]}
    assert holds(not_all, snapshot) is holds(any_not, snapshot)
    assert holds({"not": {"not": a}}, snapshot) is holds(a, snapshot)


@settings(max_examples=300, deadline=None)
@given(at=instants, offset=st.integers(-14 * 60, 14 * 60))
def test_normalised_dates_and_times_parse_to_themselves(at: int, offset: int) -> None:
    zone = UTC if offset == 0 else None
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at)
    written = moment.astimezone(zone).isoformat() if zone else moment.isoformat()
    for parse in (parse_date, parse_datetime):
        once = parse(written)
        assert once.problem is None
        assert parse(once.value) == once


@settings(max_examples=300, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=9, max_size=9),
    sep=st.sampled_from(["", "-", " "]),
)
def test_an_ssn_never_keeps_more_than_its_last_four_digits(digits: str, sep: str) -> None:
    parsed = parse_ssn(f"{digits[:3]}{sep}{digits[3:5]}{sep}{digits[5:]}")
    for shown in [parsed.value, *parsed.components.values()]:
        visible = "".join(ch for ch in str(shown) if ch.isdigit())
        assert visible in ("", digits[5:])
