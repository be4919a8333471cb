"""Fixed log buckets for durations: how the analytics projection keeps percentiles that
merge across hours and come out the same after a rebuild.

A duration ``ms`` falls in the bucket ``[lo, hi)`` whose ``lo`` is the largest bound at or
below it. Bounds: every integer below 32, then 16 per doubling (32, 34, ..., 62, 64, 68,
...) up to 2^31 (the ``ms`` column is an int4). A bucket is at most 1/16 of its lower
bound wide, so reading a percentile as its bucket's largest value (``hi - 1``) is never
below the true one and at most 6.25 % above it; below 32 ms it is exact.

Why buckets and not each hour's sorted durations: both are exact under replay (counts and
sorted lists do not depend on arrival order) and both merge across hours, but a sorted
array costs a value per event and is rewritten on every batch that touches its hour, while
a histogram is a few dozen counters per hour and step, added to in place.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

EXACT_BELOW = 32
SUB_BUCKETS = 16
TOP = 2**31


def _bounds() -> list[int]:
    bounds = list(range(EXACT_BELOW))
    low = EXACT_BELOW
    while low < TOP:
        step = low // SUB_BUCKETS
        bounds += range(low, low * 2, step)
        low *= 2
    return bounds


BOUNDS: tuple[int, ...] = tuple(_bounds())


def bucket(ms: int) -> tuple[int, int]:
    """The ``[lo, hi)`` holding ``ms`` (negative durations count as 0)."""
    i = bisect.bisect_right(BOUNDS, max(ms, 0)) - 1
    return BOUNDS[i], BOUNDS[i + 1] if i + 1 < len(BOUNDS) else TOP


def percentile(buckets: Iterable[tuple[int, int, int]], q: float) -> int | None:
    """The ``q`` quantile (nearest rank) of ``(lo, hi, count)`` buckets, as the largest value
    of the bucket that holds it; None when empty. The SQL readers compute the same."""
    rows = sorted(buckets)
    total = sum(n for _, _, n in rows)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for _lo, hi, n in rows:
        seen += n
        if seen >= rank:
            return hi - 1
    raise AssertionError("unreachable: the ranks add up to the total")
