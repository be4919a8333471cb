"""When a failing destination stops being retried: a pure policy over its recent write outcomes.

A destination is deactivated only when both thresholds of its ``deactivation``
settings are crossed: at least ``after_failures`` failed writes since the last
success, and at least ``after_seconds`` since the first of them. Counting alone
would deactivate on one bad batch (a batch of 500 writes fails 500 times in a
second); time alone would deactivate a destination that failed twice in a quiet
hour. Any success starts the count again: a flaky store that still delivers is
slow, not broken.

No clock and no I/O here: callers pass ``now`` (seconds, monotonic or wall),
so the policy is specified by plain values in ``tests/streamers/test_health.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.destinations import Deactivation


@dataclass(frozen=True, slots=True)
class Health:
    """Failed writes since the last success, and when the first of them happened."""

    failures: int = 0
    failing_since: float | None = None
    last_error: str | None = None

    def failed(self, now: float, error: str) -> Health:
        """This health after one more failed write at ``now``."""
        since = self.failing_since if self.failing_since is not None else now
        return replace(self, failures=self.failures + 1, failing_since=since, last_error=error)

    def succeeded(self) -> Health:
        """A success clears the streak: the destination delivers, however slowly."""
        return Health()


def deactivation_reason(health: Health, policy: Deactivation, now: float) -> str | None:
    """Why the destination should be deactivated now, or None while it should be retried."""
    if health.failing_since is None or health.failures < policy.after_failures:
        return None
    failing_for = now - health.failing_since
    if failing_for < policy.after_seconds:
        return None
    reason = f"{health.failures} failed writes over {failing_for:.0f}s without a success"
    return f"{reason}; last error: {health.last_error}" if health.last_error else reason
