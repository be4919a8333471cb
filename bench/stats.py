"""Median/min/max over rounds, and ratios between medians: the only arithmetic the report does.

Medians, not means: on a shared machine one round hit by a neighbour's test run
would drag a mean; min and max are kept so that spread stays visible.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    min: float
    max: float
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "values": list(self.values),
        }


def summarize(values: Sequence[float]) -> Summary | None:
    """None for no rounds: a scenario that failed every round has no figure, not a zero."""
    if not values:
        return None
    return Summary(statistics.median(values), min(values), max(values), tuple(values))


def ratio(numerator: Summary | None, denominator: Summary | None) -> float | None:
    """Ratio of medians; None when either side is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator.median == 0:
        return None
    return numerator.median / denominator.median


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of latencies; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
