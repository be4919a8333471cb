"""Token buckets: per key (requests) and per client address (failed authentications).

In memory, per API process: with ``--workers N`` a client may get up to N times the
rate, which bounds abuse without a shared store on every request's path.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``per_minute`` tokens per name, refilled evenly; ``take`` says how long to wait if empty."""

    def __init__(self, max_names: int = 100_000) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._max_names = max_names

    def _bucket(self, name: str, per_minute: int, now: float) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= self._max_names:  # bounded memory under a flood of names
                self._buckets.clear()
            bucket = self._buckets[name] = _Bucket(float(per_minute), now)
        else:
            refill = (now - bucket.at) * per_minute / 60.0
            bucket.tokens = min(float(per_minute), bucket.tokens + refill)
            bucket.at = now
        return bucket

    def take(self, name: str, per_minute: int) -> int | None:
        """None if ``name`` may go on (a token taken), else the seconds until it may."""
        with self._lock:
            now = time.monotonic()
            bucket = self._bucket(name, per_minute, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - bucket.tokens) * 60.0 / per_minute))

    def empty(self, name: str, per_minute: int) -> int | None:
        """Like ``take`` but takes nothing: the wait if ``name`` has no token left, else None."""
        with self._lock:
            bucket = self._bucket(name, per_minute, time.monotonic())
            if bucket.tokens >= 1.0:
                return None
            return max(1, math.ceil((1.0 - bucket.tokens) * 60.0 / per_minute))
