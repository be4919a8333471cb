"""What makes the local buyer answer like a real one, and what it saw: for benches and chaos.

Real buyers answer in a few hundred milliseconds with a long tail, and some never
answer at all. ``Realism`` draws each answer's latency from a lognormal with a
given median and p99 and holds a share of requests unanswered until the caller
gives up. ``BuyerStats`` counts what arrived - requests, idempotency keys seen
once and again (duplicates: the same delivery posted twice), requests in flight
and their peak, answer latencies - for ``GET /stats``. Counting never looks at a
lead's fields (no PII leaves the buyer through its stats).
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# The p99 of a standard normal: a lognormal's sigma from its median and p99.
_Z99 = 2.3263478740408408
# Latencies kept for the percentiles: the most recent ones, so memory stays flat.
KEPT_LATENCIES = 100_000
# Duplicated keys listed in the stats (the first ones), for a chaos run to show.
SHOWN_DUPLICATES = 100


@dataclass(frozen=True)
class Realism:
    """How the buyer answers: latency (``median_ms``/``p99_ms``; 0: at once) and the
    share of requests never answered (held until the caller goes, at most ``hold_s``)."""

    median_ms: float = 0.0
    p99_ms: float = 0.0
    timeout_fraction: float = 0.0
    hold_s: float = 600.0
    seed: int | None = None
    rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.median_ms < 0 or (self.p99_ms and self.p99_ms < self.median_ms):
            raise ValueError("latency needs 0 <= median <= p99")
        if not 0.0 <= self.timeout_fraction <= 1.0:
            raise ValueError("timeout_fraction is a share, between 0 and 1")
        object.__setattr__(self, "rng", random.Random(self.seed))

    @property
    def instant(self) -> bool:
        return self.median_ms == 0 and self.timeout_fraction == 0

    def latency_s(self) -> float:
        """One answer's latency: lognormal with the median and p99 asked for."""
        if self.median_ms <= 0:
            return 0.0
        sigma = math.log(max(self.p99_ms, self.median_ms) / self.median_ms) / _Z99
        return self.rng.lognormvariate(math.log(self.median_ms), sigma) / 1000

    def never_answers(self) -> bool:
        return self.timeout_fraction > 0 and self.rng.random() < self.timeout_fraction


def _percentile(sorted_ms: list[float], share: float) -> float | None:
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, math.ceil(share * len(sorted_ms)) - 1)]


class BuyerStats:
    """What the buyer saw, thread-safe (one thread per connection)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self._keys: set[str] = set()
        self.duplicates = 0
        self._duplicated: list[str] = []
        self.unkeyed = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.held = 0
        self._latencies: deque[float] = deque(maxlen=KEPT_LATENCIES)

    def arrived(self, key: str) -> bool:
        """Count a request; True if its idempotency key was seen before (a duplicate)."""
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            if not key:
                self.unkeyed += 1
                return False
            if key in self._keys:
                self.duplicates += 1
                if len(self._duplicated) < SHOWN_DUPLICATES:
                    self._duplicated.append(key)
                return True
            self._keys.add(key)
            return False

    def left(self, latency_ms: float | None) -> None:
        """A request ended: answered after ``latency_ms``, or None (never answered)."""
        with self._lock:
            self.in_flight -= 1
            if latency_ms is None:
                self.held += 1
            else:
                self._latencies.append(latency_ms)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            latencies = sorted(self._latencies)
            return {
                "requests": self.requests,
                "unique_keys": len(self._keys),
                "duplicates": self.duplicates,
                "duplicate_keys": list(self._duplicated),
                "unkeyed": self.unkeyed,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "never_answered": self.held,
                "answered": len(latencies),
                "latency_ms": {
                    "p50": _percentile(latencies, 0.50),
                    "p99": _percentile(latencies, 0.99),
                    "max": latencies[-1] if latencies else None,
                },
            }
