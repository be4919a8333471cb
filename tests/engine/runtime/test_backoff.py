"""Retry delays: exponential, jittered, capped."""

from engine.runtime.backoff import backoff_delay


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt, ceiling in [(1, 0.2), (2, 0.4), (5, 3.2), (40, 30.0)]:
        delays = [backoff_delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_a_lower_cap_bounds_every_delay() -> None:
    assert all(5.0 <= backoff_delay(a, cap_s=10.0) <= 10.0 for a in range(8, 40))
