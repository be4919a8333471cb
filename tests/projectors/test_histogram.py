"""The duration buckets behind the analytics projection's percentiles: exact below 32 ms,
never under the true value and at most 1/16 over it above that, and mergeable by addition."""

from __future__ import annotations

import math
import random
from collections import Counter

from projectors.histogram import BOUNDS, EXACT_BELOW, TOP, bucket, percentile


def test_small_durations_have_a_bucket_each() -> None:
    assert [bucket(ms) for ms in (0, 1, 31)] == [(0, 1), (1, 2), (31, 32)]
    assert bucket(-5) == (0, 1)


def test_larger_durations_fall_in_buckets_at_most_a_sixteenth_wide() -> None:
    assert bucket(32) == (32, 34)
    assert bucket(100) == (100, 104)
    assert bucket(5000) == (4864, 5120)
    assert bucket(TOP - 1)[1] == TOP
    for lo, hi in zip(BOUNDS[EXACT_BELOW:], [*BOUNDS[EXACT_BELOW + 1 :], TOP], strict=True):
        assert 0 < hi - lo <= lo / 16


def nearest_rank(values: list[int], q: float) -> int:
    return sorted(values)[max(1, math.ceil(q * len(values))) - 1]


def histogram(values: list[int]) -> Counter[tuple[int, int]]:
    return Counter(bucket(v) for v in values)


def test_a_percentile_read_from_buckets_is_the_true_one_or_at_most_a_sixteenth_above() -> None:
    rng = random.Random(20)
    values = [int(rng.lognormvariate(5, 1.5)) for _ in range(5000)]
    for q in (0.5, 0.95, 0.99):
        true = nearest_rank(values, q)
        read = percentile([(lo, hi, n) for (lo, hi), n in histogram(values).items()], q)
        assert read is not None and true <= read <= max(true, true + true / 16)


def test_hours_merge_by_adding_their_counts_in_any_order() -> None:
    rng = random.Random(7)
    hours = [[rng.randrange(0, 20_000) for _ in range(300)] for _ in range(5)]
    merged: Counter[tuple[int, int]] = Counter()
    for hour in reversed(hours):
        merged.update(histogram(hour))
    assert merged == histogram([v for hour in hours for v in hour])
    rows = [(lo, hi, n) for (lo, hi), n in merged.items()]
    assert percentile(rows, 0.95) == percentile(list(reversed(rows)), 0.95)
    assert percentile([], 0.5) is None
