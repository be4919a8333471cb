"""Cap rules as plain values: counter names, which cap stops a lead, and the reasons given."""

from __future__ import annotations

import pytest

from engine.caps import CapSpec, Duration
from engine.steps.cap_checks import (
    CapCount,
    cap_checks,
    cap_key,
    first_full,
    flow_scope,
    recipient_cap_reason,
    recipient_scope,
    source_cap_reason,
    source_scope,
)

AT = 1_772_000_000_000


def count(spec: CapSpec, n: int, holds: bool = False, scope: str = "recipient:f/buyer") -> CapCount:
    (check,) = cap_checks(scope, [spec], AT)
    return CapCount(check, n, holds)


def test_the_counter_name_ignores_the_maximum_so_raising_a_cap_keeps_its_count() -> None:
    scope = recipient_scope("solar", "premier")
    day_100 = CapSpec(maximum=100)
    day_200 = CapSpec(maximum=200)
    assert cap_key(scope, day_100) == cap_key(scope, day_200) == "recipient:solar/premier:day@UTC"
    named = CapSpec(maximum=5, duration="hour", time_zone="America/Chicago", name="Weekend")
    assert cap_key(scope, named) == "recipient:solar/premier:hour@America/Chicago:Weekend"
    assert cap_key(flow_scope("solar"), day_100) != cap_key(source_scope("solar", "web"), day_100)


def test_caps_of_one_counter_are_checked_once_against_the_tighter_maximum() -> None:
    checks = cap_checks(
        "flow:f",
        [CapSpec(maximum=10), CapSpec(maximum=3), CapSpec(maximum=50, duration="hour")],
        AT,
    )
    assert [(c.key, c.spec.maximum, c.kind) for c in checks] == [
        ("flow:f:day@UTC", 3, "flow"),
        ("flow:f:hour@UTC", 50, "flow"),
    ]


def test_a_cap_is_full_at_its_maximum_except_for_a_lead_it_already_holds() -> None:
    spec = CapSpec(maximum=3)
    assert not count(spec, 2).full
    assert count(spec, 3).full
    assert not count(spec, 3, holds=True).full  # a re-run keeps its place
    assert not count(spec, 5, holds=True).full  # even after the maximum was lowered
    hourly = CapSpec(maximum=1, duration="hour")
    assert first_full([count(spec, 1), count(hourly, 1)]) == count(hourly, 1)
    assert first_full([count(spec, 1), count(hourly, 0)]) is None


@pytest.mark.parametrize(
    ("duration", "reason"),
    [
        ("minute", "Minute cap reached (100/100)"),
        ("hour", "Hourly cap reached (100/100)"),
        ("day", "Daily cap reached (100/100)"),
        ("week", "Weekly cap reached (100/100)"),
        ("month", "Monthly cap reached (100/100)"),
    ],
)
def test_recipient_reasons_name_the_period_and_the_count(duration: Duration, reason: str) -> None:
    assert recipient_cap_reason(count(CapSpec(maximum=100, duration=duration), 100)) == reason


def test_reasons_name_a_named_cap_and_the_scope_at_the_source() -> None:
    named = CapSpec(maximum=3, name="Weekend buyers")
    assert recipient_cap_reason(count(named, 3)) == 'Daily cap "Weekend buyers" reached (3/3)'
    flow_cap = count(CapSpec(maximum=2), 2, scope=flow_scope("f"))
    assert source_cap_reason(flow_cap) == "Cap reached: Daily flow cap (2/2)"
    source_cap = count(CapSpec(maximum=9, duration="hour", name="Promo"), 9, scope="source:f/web")
    assert source_cap_reason(source_cap) == 'Cap reached: Hourly source cap "Promo" (9/9)'
