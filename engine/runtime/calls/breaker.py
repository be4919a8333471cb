"""A circuit breaker per destination: stop calling a service that keeps failing.

After ``failures`` consecutive failed calls (no answer - a timeout, a refused
connection, garbage - or an HTTP 5xx) a destination's breaker opens and its calls
fail at once with "circuit open", without a connection, for ``cool_down_ms``; then
one call is let through as a probe (half-open): its success closes the breaker, its
failure opens it again.
A failing buyer then costs the worker no sockets and no deadlines, and the leads
go to the step's retry topic (or on) at once. ``failures=0`` turns it off.

Used on the runner's event loop only, so it needs no lock; ``states`` is read
from other threads for metrics, as a copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from engine.steps.calls import Answer, Call

State = Literal["closed", "open", "half_open"]
STATES: tuple[State, ...] = ("closed", "open", "half_open")


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    def state(self, cool_down_s: float, now: float) -> State:
        if self.opened_at is None:
            return "closed"
        return "half_open" if now - self.opened_at >= cool_down_s else "open"


def failed(answer: Answer) -> bool:
    """No answer at all, or the service saying it is down (5xx): what opens a breaker.
    A refusal or a 4xx is the service working."""
    return answer.error is not None or (answer.status or 0) >= 500


class Breakers:
    """One breaker per destination (``Call.destination``)."""

    def __init__(self, failures: int = 0, cool_down_ms: int = 30_000) -> None:
        self.failures = failures
        self.cool_down_s = cool_down_ms / 1000
        self._by_destination: dict[str, _Breaker] = {}

    def refuse(self, call: Call) -> str | None:
        """Why ``call`` must fail fast (the breaker is open), or None to make it."""
        if self.failures <= 0:
            return None
        breaker = self._by_destination.get(call.destination)
        if breaker is None:
            return None
        state = breaker.state(self.cool_down_s, time.monotonic())
        if state == "closed":
            return None
        if state == "half_open" and not breaker.probing:
            breaker.probing = True  # this call is the probe; the others still fail fast
            return None
        return f"{call.service} circuit open: {breaker.failures} calls failed in a row"

    def record(self, call: Call, answer: Answer) -> State | None:
        """Count the answer: an error moves the breaker towards open, anything else closes
        it. Returns the breaker's state after it (None when there are no breakers)."""
        if self.failures <= 0:
            return None
        breaker = self._by_destination.setdefault(call.destination, _Breaker())
        if not failed(answer):
            breaker.failures, breaker.opened_at, breaker.probing = 0, None, False
            return "closed"
        breaker.failures += 1
        if breaker.probing or breaker.failures >= self.failures:
            breaker.opened_at, breaker.probing = time.monotonic(), False
            return "open"
        return "closed"

    def cancelled(self, call: Call) -> None:
        """A call was cut before its answer (a window, a close): if it was the probe, the
        next call probes instead."""
        breaker = self._by_destination.get(call.destination)
        if breaker is not None:
            breaker.probing = False

    def states(self) -> dict[str, State]:
        """Each known destination's state, for metrics and status output."""
        now = time.monotonic()
        return {d: b.state(self.cool_down_s, now) for d, b in list(self._by_destination.items())}
