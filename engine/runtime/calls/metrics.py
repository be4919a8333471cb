"""Prometheus series of the calls to buyers and services, per destination.

In the workers' registry (``engine.runtime.kafka.metrics``), so they come out of
the same exposition: calls on the wire now, how long services took to answer (the
answer's ``wait_ms``, whatever the outcome) and each destination's breaker state.
A destination is a URL's scheme, host and port only (``Call.destination``): never
a path, a query or credentials.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from engine.runtime.calls.breaker import STATES, State
from engine.runtime.kafka.metrics import REGISTRY
from engine.steps.calls import Answer

_IN_FLIGHT = Gauge(
    "leadflow_calls_in_flight",
    "Calls on the wire to a destination now (sent, not yet answered).",
    ("destination",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
_SECONDS = Histogram(
    "leadflow_call_seconds",
    "Time a destination took to answer a call (or to fail it), by outcome.",
    ("destination", "outcome"),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
_REFUSED = Counter(
    "leadflow_calls_refused",
    "Calls failed at once because the destination's breaker was open.",
    ("destination",),
    registry=REGISTRY,
)
_BREAKER = Gauge(
    "leadflow_call_breaker_state",
    "1 for the state a destination's breaker is in (closed, open, half_open), 0 for the others.",
    ("destination", "state"),
    multiprocess_mode="livemax",
    registry=REGISTRY,
)


def sent(destination: str) -> None:
    _IN_FLIGHT.labels(destination).inc()


def ended(destination: str, answer: Answer | None) -> None:
    """A call sent to ``destination`` ended with ``answer`` (None: cut before one came)."""
    _IN_FLIGHT.labels(destination).dec()
    if answer is not None:
        outcome = "answered" if answer.error is None else "failed"
        _SECONDS.labels(destination, outcome).observe(answer.wait_ms / 1000)


def refused(destination: str) -> None:
    _REFUSED.labels(destination).inc()


def breaker_state(destination: str, state: State) -> None:
    for each in STATES:
        _BREAKER.labels(destination, each).set(1 if each == state else 0)
