"""Out-of-order progress of a partition: what a commit says is done, and what a restart redoes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.runtime.kafka.progress import (
    MAX_SPAN,
    MetadataError,
    PartitionProgress,
    decode_done,
    encode_done,
)


@given(base=st.integers(0, 10**12), above=st.sets(st.integers(1, 5000), max_size=400))
def test_metadata_round_trips_the_done_offsets_above_the_base(base: int, above: set[int]) -> None:
    done = {base + n for n in above}
    assert decode_done(base, encode_done(base, done)) == done


def test_no_done_offsets_above_the_base_is_empty_metadata() -> None:
    assert encode_done(7, {3, 5}) == ""
    assert decode_done(7, "") == decode_done(7, None) == set()


def test_the_worst_bitmap_of_a_full_span_fits_the_brokers_metadata_limit() -> None:
    """Every other offset done over the whole span: the least compressible pattern it meets."""
    metadata = encode_done(0, range(1, MAX_SPAN, 2))
    assert len(metadata) < 4096  # offset.metadata.max.bytes' default


@pytest.mark.parametrize("foreign", ["some other tool's note", "lf1:not base64!", "lf1:aGVsbG8="])
def test_metadata_that_is_not_ours_is_refused_not_misread(foreign: str) -> None:
    with pytest.raises(MetadataError):
        decode_done(0, foreign)


def test_finishing_out_of_order_commits_the_lowest_unfinished_and_lists_the_rest() -> None:
    progress = PartitionProgress(10)
    for offset in range(10, 16):
        assert progress.take(offset)
    for offset in (11, 12, 14):
        progress.finish(offset)
    base, metadata = progress.commit()
    assert base == 10
    assert decode_done(base, metadata) == {11, 12, 14}
    progress.finish(10)
    assert progress.commit()[0] == 13
    assert progress.span == 3


def test_offsets_skipped_between_fetched_records_are_no_records() -> None:
    """A transaction's commit marker takes an offset no consumer sees: it must not hold the
    base back for ever."""
    progress = PartitionProgress(0)
    for offset in (0, 1, 3, 4):  # 2 is a marker
        assert progress.take(offset)
        progress.finish(offset)
    assert progress.commit() == (5, "")
    progress.reached(6)  # the end is 6: 5 is the last transaction's marker
    assert progress.commit() == (6, "")


def test_a_restart_skips_what_the_metadata_lists_and_redoes_the_rest() -> None:
    first = PartitionProgress(0)
    for offset in range(8):
        first.take(offset)
    for offset in (1, 2, 5, 7):
        first.finish(offset)
    committed = first.commit()

    restarted = PartitionProgress.from_commit(*committed)
    redone = [offset for offset in range(8) if restarted.take(offset)]
    assert redone == [0, 3, 4, 6]


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    """Offsets of a partition's records (gaps between them are markers), an order in which
    their work finishes, and how many finish before the commit a crash comes after."""
    steps = draw(st.lists(st.integers(1, 3), min_size=1, max_size=60))
    offsets = [sum(steps[: i + 1]) for i in range(len(steps))]
    order = draw(st.permutations(offsets))
    return offsets, list(order), draw(st.integers(0, len(offsets)))


@given(runs())
def test_a_crash_after_any_commit_redoes_exactly_the_records_not_done(
    run: tuple[list[int], list[int], int],
) -> None:
    """Every record's outputs are committed exactly once across a crash and a restart."""
    offsets, order, finished_before_commit = run
    progress = PartitionProgress(0)
    for offset in offsets:
        assert progress.take(offset)
    done_first = order[:finished_before_commit]
    for offset in done_first:
        progress.finish(offset)
    committed = progress.commit()

    restarted = PartitionProgress.from_commit(*committed)
    redone = [o for o in offsets if restarted.take(o)]
    assert sorted(redone + done_first) == offsets
    for offset in redone:
        restarted.finish(offset)
    assert restarted.commit() == (offsets[-1] + 1, "")


def test_a_copy_taken_at_a_commit_is_where_an_aborted_transaction_goes_back_to() -> None:
    progress = PartitionProgress(0)
    for offset in range(4):
        progress.take(offset)
    progress.finish(0)
    saved = progress.copy()
    progress.finish(1)  # in the transaction that aborts
    saved.rewind()
    assert [o for o in range(4) if saved.take(o)] == [1, 2, 3]
