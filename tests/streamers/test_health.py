"""The deactivation policy: failures since the last success AND time since the first of them."""

from __future__ import annotations

from engine.destinations import Deactivation
from streamers.health import Health, deactivation_reason

POLICY = Deactivation(after_failures=3, after_seconds=60)


def failing(times: list[float], error: str = "NoSuchBucket (HTTP 404) on PutObject") -> Health:
    health = Health()
    for at in times:
        health = health.failed(at, error)
    return health


def test_a_healthy_destination_stays() -> None:
    assert deactivation_reason(Health(), POLICY, now=1e9) is None


def test_enough_failures_in_too_short_a_time_are_retried() -> None:
    # A whole batch failing at once is an outage blip, not a broken destination.
    health = failing([0.0] * 500)
    assert deactivation_reason(health, POLICY, now=59.9) is None


def test_too_few_failures_over_a_long_time_are_retried() -> None:
    health = failing([0.0, 3600.0])
    assert deactivation_reason(health, POLICY, now=7200.0) is None


def test_both_thresholds_crossed_deactivates_with_counts_and_the_last_error() -> None:
    health = failing([10.0, 20.0, 70.0], error="AccessDenied (HTTP 403) on PutObject")
    reason = deactivation_reason(health, POLICY, now=70.0)
    assert reason == (
        "3 failed writes over 60s without a success;"
        " last error: AccessDenied (HTTP 403) on PutObject"
    )


def test_time_counts_from_the_first_failure_of_the_streak() -> None:
    health = failing([100.0, 150.0, 159.0])
    assert health.failing_since == 100.0
    assert deactivation_reason(health, POLICY, now=159.9) is None
    assert deactivation_reason(health, POLICY, now=160.0) is not None


def test_a_success_starts_the_count_again() -> None:
    health = failing([0.0, 30.0]).succeeded().failed(61.0, "x").failed(62.0, "x")
    assert (health.failures, health.failing_since) == (2, 61.0)
    assert deactivation_reason(health, POLICY, now=200.0) is None
    assert deactivation_reason(health.failed(200.0, "x"), POLICY, now=200.0) is not None
