"""Each destination's calls as an operator asks about them: breaker, in flight, latency.

The state lives in the calling workers' processes (``engine.runtime.calls.metrics``)
and leaves them through their Prometheus exposition, which ``leadflow run`` already
serves summed over its role processes. ``leadflow calls status`` and the operator UI
read that exposition rather than a second channel (a status topic, a table) that
would have to be kept in step with the breaker: what they show is what the metrics
scraper sees. A deployment with several ``leadflow run`` hosts lists each one's URL.

Reading is split from fetching: :func:`read_status` is pure (text in, rows out) and
:func:`fetch_status` does the HTTP, each URL on its own so one host down is a row
saying so, not a failed command.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from engine.runtime.calls.breaker import STATES
from engine.settings import Settings

_IN_FLIGHT = "leadflow_calls_in_flight"
_SECONDS = "leadflow_call_seconds"
_REFUSED = "leadflow_calls_refused"
_BREAKER = "leadflow_call_breaker_state"


@dataclass(slots=True)
class DestinationStatus:
    """One destination (scheme, host and port: never a path or credentials)."""

    destination: str
    # Every state some process's breaker is in for it: one when all agree; "open" and
    # "closed" both when one process has seen the failures and another has not yet.
    breaker: list[str] = field(default_factory=list)
    in_flight: int = 0
    answered: int = 0
    failed: int = 0
    refused: int = 0
    # From the histogram's buckets, interpolated as Prometheus' histogram_quantile does;
    # None before any call ended.
    p50_ms: float | None = None
    p95_ms: float | None = None


@dataclass(slots=True)
class _Buckets:
    by_le: dict[float, float] = field(default_factory=lambda: defaultdict(float))

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in seconds (None without observations)."""
        bounds = sorted(self.by_le.items())
        if not bounds or bounds[-1][1] <= 0:
            return None
        total = bounds[-1][1]
        rank = q * total
        lower, below = 0.0, 0.0
        for le, cumulative in bounds:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower  # beyond the last finite bucket: its bound is all we know
                inside = cumulative - below
                share = (rank - below) / inside if inside else 1.0
                return lower + (le - lower) * share
            lower, below = le, cumulative
        return lower


def read_status(exposition: str) -> list[DestinationStatus]:
    """Per destination, from one Prometheus text exposition (sorted by destination)."""
    rows: dict[str, DestinationStatus] = {}
    buckets: dict[str, _Buckets] = defaultdict(_Buckets)

    def row(destination: str) -> DestinationStatus:
        return rows.setdefault(destination, DestinationStatus(destination))

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            destination = sample.labels.get("destination")
            if destination is None:
                continue
            if sample.name == _IN_FLIGHT:
                row(destination).in_flight += int(sample.value)
            elif sample.name == f"{_SECONDS}_count":
                status = row(destination)
                if sample.labels.get("outcome") == "answered":
                    status.answered += int(sample.value)
                else:
                    status.failed += int(sample.value)
            elif sample.name == f"{_SECONDS}_bucket":
                buckets[destination].by_le[float(sample.labels["le"])] += sample.value
            elif sample.name == f"{_REFUSED}_total":
                row(destination).refused += int(sample.value)
            elif sample.name == _BREAKER and sample.value >= 1:
                state = sample.labels.get("state", "")
                status = row(destination)
                if state in STATES and state not in status.breaker:
                    status.breaker.append(state)
    for destination, seen in buckets.items():
        status = row(destination)
        for q, name in ((0.5, "p50_ms"), (0.95, "p95_ms")):
            seconds = seen.quantile(q)
            setattr(status, name, None if seconds is None else round(seconds * 1000, 1))
    for status in rows.values():
        status.breaker.sort(key=STATES.index)
    return [rows[d] for d in sorted(rows)]


@dataclass(slots=True)
class SourceStatus:
    """What one metrics URL answered: its destinations, or why it could not be read."""

    url: str
    destinations: list[DestinationStatus]
    error: str | None = None


def fetch_status(urls: list[str], timeout_s: float = 3.0) -> list[SourceStatus]:
    """Each URL's destinations; a URL that does not answer is a row with its error."""
    answers: list[SourceStatus] = []
    with httpx.Client(timeout=timeout_s) as client:
        for url in urls:
            try:
                response = client.get(url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
                if isinstance(exc, httpx.HTTPStatusError):
                    reason = f"HTTP {exc.response.status_code}"
                answers.append(SourceStatus(url, [], f"not readable ({reason})"))
                continue
            answers.append(SourceStatus(url, read_status(response.text)))
    return answers


def metrics_urls(settings: Settings) -> list[str]:
    """The expositions to read: ``LEADFLOW_CALLS_METRICS_URLS``, else this host's
    ``leadflow run`` at ``LEADFLOW_METRICS_PORT`` (none when that is off)."""
    listed = [u.strip() for u in settings.calls_metrics_urls.split(",") if u.strip()]
    if listed:
        return listed
    if settings.metrics_port:
        return [f"http://127.0.0.1:{settings.metrics_port}/metrics"]
    return []
