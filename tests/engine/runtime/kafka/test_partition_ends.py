"""A partition's end and its records in one batch, without a broker.

librdkafka hands over the partition-EOF event in the same batch as the records before
it, and the kit's triage reports the end before the caller sees those records: each
reader that stops at the end must still take them (and an end followed by a new record
is no end). The lag reader's case is in ``test_lag``.
"""

from __future__ import annotations

from typing import Any

from engine.runtime.kafka.fetch import ConsumeErrors
from engine.settings import Settings
from projectors.replay import Rebuild
from streamers.backfill import _consume
from tests.engine.runtime.kafka.fakes import FakeMessage, ScriptedConsumer, end_of

TOPIC = "leadflow.f.events.source"
TP = (TOPIC, 0)


def record(offset: int) -> FakeMessage:
    return FakeMessage(str(offset), topic=TOPIC, partition=0, offset=offset)


def test_a_backfill_writes_the_records_that_came_with_the_end() -> None:
    consumer: Any = ScriptedConsumer([[record(3), record(4), end_of(TOPIC, 0, 6)]], {})
    remaining = {TP: (3, 7)}
    taken = _consume(consumer, remaining, 500, ConsumeErrors())
    assert [m.offset() for m in taken] == [3, 4]
    assert remaining == {}  # read to its end


def rebuild() -> Rebuild:
    reading = Rebuild(Settings(), "timeline")
    reading._positions = {TP: 3}
    return reading


def test_a_rebuild_is_at_a_partitions_end_only_when_no_record_came_after_it() -> None:
    before: Any = ScriptedConsumer([[record(3), record(4), end_of(TOPIC, 0, 6)]], {})
    reading = rebuild()
    assert [r.offset for r in reading._read(before)] == [3, 4]
    assert reading._at_end == {TP} and reading._positions[TP] == 6

    after: Any = ScriptedConsumer([[end_of(TOPIC, 0, 6), record(6)]], {})
    reading = rebuild()
    assert [r.offset for r in reading._read(after)] == [6]
    assert reading._at_end == set()  # the end moved on: read on
