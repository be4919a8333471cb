"""The bench's arithmetic: medians with their spread, ratios of medians, percentiles."""

from __future__ import annotations

import pytest

from bench.stats import Summary, percentile, ratio, summarize


def test_summary_is_median_min_max_of_the_rounds() -> None:
    assert summarize([3.0, 1.0, 2.0]) == Summary(2.0, 1.0, 3.0, (3.0, 1.0, 2.0))


def test_even_number_of_rounds_takes_the_middle_mean() -> None:
    summary = summarize([1.0, 2.0, 10.0, 4.0])
    assert summary is not None and summary.median == 3.0


def test_no_rounds_is_no_figure_rather_than_zero() -> None:
    assert summarize([]) is None


def test_ratio_divides_medians() -> None:
    assert ratio(summarize([6.0, 6.0, 60.0]), summarize([3.0, 2.0, 4.0])) == 2.0


@pytest.mark.parametrize("missing", [None, Summary(0.0, 0.0, 0.0, (0.0,))])
def test_ratio_without_a_denominator_is_none(missing: Summary | None) -> None:
    assert ratio(summarize([1.0]), missing) is None
    assert ratio(None, summarize([1.0])) is None


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) == 0.0
