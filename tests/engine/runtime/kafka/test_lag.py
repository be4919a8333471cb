"""Lag arithmetic, without a broker: what a reader has left to read, markers and aborts aside."""

from __future__ import annotations

from typing import Any

from engine.runtime.kafka.offsets import RangeRead, _read_pass, lag_from, plan_reads
from tests.engine.runtime.kafka.fakes import FakeMessage, ScriptedConsumer, end_of

EXACT = 1000
TOPIC = "leadflow.f.events.source"
TP = (TOPIC, 0)


def test_a_reader_at_the_end_has_no_lag_and_nothing_is_read() -> None:
    assert lag_from(10, 10, None, EXACT) == 0
    assert lag_from(12, 10, None, EXACT) == 0  # past a shrunken end: still nothing to read
    assert plan_reads({"g": {TP: 10}}, {TP: 10}, EXACT) == []


def test_one_short_of_the_end_behind_a_commit_marker_is_no_lag() -> None:
    # A transactional partition: records 0-9, the commit marker at 10, the end 11. The
    # group committed 10, the offset after its last record: nothing is left to read.
    assert lag_from(10, 11, [], EXACT) == 0


def test_records_left_are_counted_one_by_one_markers_and_aborts_not() -> None:
    # Records at 10-12, a marker at 13, aborted records 14-15 and their marker at 16.
    assert lag_from(10, 17, [10, 11, 12], EXACT) == 3
    # Found by a read from a lower reader's position: only what is ahead of this one counts.
    assert lag_from(12, 17, [5, 10, 11, 12], EXACT) == 1


def test_far_behind_the_lag_is_the_distance_unless_nothing_at_all_is_readable() -> None:
    assert lag_from(0, 5000, [0], EXACT) == 5000
    assert lag_from(0, 5000, [], EXACT) == 0  # a huge aborted transaction, say


def test_unread_the_lag_is_the_distance_an_upper_bound() -> None:
    assert lag_from(3, 10, None, EXACT) == 7


def test_readers_close_to_the_end_share_one_read_from_the_lowest_of_them() -> None:
    other = ("leadflow.f.events.source", 1)
    plan = plan_reads(
        {"a": {TP: 8, other: 4}, "b": {TP: 6}, "c": {TP: 10}},
        {TP: 10, other: 4},
        EXACT,
    )
    assert plan == [{TP: RangeRead(6, 10, every=True)}]


def test_readers_far_behind_get_a_first_record_read_each_in_passes_of_one_per_partition() -> None:
    plan = plan_reads({"near": {TP: 4995}, "a": {TP: 0}, "b": {TP: 100}}, {TP: 5000}, EXACT)
    assert plan[0] == {TP: RangeRead(4995, 5000, every=True)}
    assert sorted(p[TP].start for p in plan[1:]) == [0, 100]
    assert all(not p[TP].every and len(p) == 1 for p in plan[1:])


def record(offset: int) -> FakeMessage:
    return FakeMessage(str(offset), topic=TOPIC, partition=0, offset=offset)


def test_the_lag_reader_counts_the_records_that_came_with_the_end() -> None:
    # librdkafka hands the partition's end over in the batch of the records before it,
    # and the triage reports it first: those records still count.
    consumer: Any = ScriptedConsumer([[record(3), record(4), end_of(TOPIC, 0, 6)]], {})
    found = _read_pass(consumer, {TP: RangeRead(3, 6, every=True)}, deadline=float("inf"))
    assert found == {TP: [3, 4]}
