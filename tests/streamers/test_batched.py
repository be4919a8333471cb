"""Specification of batched objects and their recovery rule, on an in-memory store.

Objects hold a contiguous run of one partition, are named by its first offset
and carry its last offset as metadata; a create that finds the name taken
trusts the stored object's range and continues right after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Message

from engine.destinations import BatchSettings, Format
from engine.objects.positions import (
    GAPS,
    MAX_GAPS,
    RECORDS,
    batch_positions,
    decode_gaps,
    parse_archive_key,
)
from schemas.codec import EventCodec
from streamers import layout
from streamers.batched import LAST_OFFSET, BatchedSink
from streamers.readback import decode_object
from streamers.work import Outcome
from tests.factories import make_lead_events
from tests.streamers.memory_store import MemoryStore

CODEC = EventCodec()
TOPIC = "leadflow.f.events.source"
HOUR_10 = 1_772_359_200_000  # 2026-03-01T10:00:00Z in ms


def records(leads: int, start_offset: int = 0, at_ms: int = HOUR_10) -> list[Message]:
    """One partition's records: 5 events per lead, submitted a second apart."""
    events = [e for i in range(leads) for e in make_lead_events("f", submitted_ms=at_ms + 1000 * i)]
    return [
        Message(topic=TOPIC, partition=0, offset=start_offset + i, value=CODEC.encode(e))
        for i, e in enumerate(events)
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


OPENED: list[BatchedSink] = []


@pytest.fixture(autouse=True)
def close_sinks() -> Iterator[None]:
    """Open batches spool to temporary files: release them after each test."""
    yield
    while OPENED:
        OPENED.pop().close()


def sink(clock: Clock | None = None, fmt: Format = "jsonl.gz", **batch: Any) -> BatchedSink:
    settings = BatchSettings(**{"max_records": 10, "max_seconds": 600, **batch})
    opened = BatchedSink(CODEC, "p", "f", fmt, settings, lambda *_: None, clock or Clock())
    OPENED.append(opened)
    return opened


def drain(s: BatchedSink, store: MemoryStore, now: float = 0.0) -> list[Outcome]:
    outcomes = []
    while (work := s.take_round(now, True)) is not None:
        outcomes += [job(store) for job in work.jobs]
        for done in work.done:
            done()
    return outcomes


def name(offset: int, ext: str = "jsonl.gz") -> str:
    at = datetime.fromtimestamp(HOUR_10 / 1000, UTC)
    return layout.batch_key("p", "f", at, TOPIC, 0, offset, ext)


def test_records_are_cut_by_count_into_objects_named_by_first_offset() -> None:
    store, s = MemoryStore(), sink()
    s.add(records(5))  # 25 records
    outcomes = drain(s, store)
    assert sorted(store.objects) == [name(0), name(10)]  # 20..24 still open
    assert [o.commit for o in outcomes] == [{(TOPIC, 0): 10}, {(TOPIC, 0): 20}]
    assert store.meta[name(10)][LAST_OFFSET] == "19"
    assert len(decode_object(name(0), store.objects[name(0)])) == 10


def test_a_quiet_partitions_open_object_is_written_after_max_seconds() -> None:
    clock, store = Clock(), MemoryStore()
    s = sink(clock, max_seconds=60)
    s.add(records(1))
    assert drain(s, store, now=59.0) == []
    assert [o.commit for o in drain(s, store, now=60.0)] == [{(TOPIC, 0): 5}]


def test_an_event_of_another_hour_starts_a_new_object() -> None:
    store, s = MemoryStore(), sink(max_records=100)
    s.add(records(1) + records(1, start_offset=5, at_ms=HOUR_10 + 3_600_000))
    s.add([])
    drain(s, store, now=1e9)  # idle-flush what is open
    assert len(store.objects) == 2
    assert name(0) in store.objects
    assert any(
        "hour=11/" in k and k.endswith("+0000000000000000005.jsonl.gz") for k in store.objects
    )


def test_a_retry_of_the_same_records_finds_its_own_object_and_commits_after_it() -> None:
    store = MemoryStore()
    first, again = sink(), sink()
    first.add(records(2))
    drain(first, store)
    before = dict(store.objects)
    again.add(records(2))
    (outcome,) = drain(again, store)
    assert store.objects == before
    assert outcome.commit == {(TOPIC, 0): 10}
    assert outcome.seek == {}
    assert [w.created for w in outcome.written] == [False]


def test_an_existing_shorter_object_is_trusted_and_reading_resumes_right_after_it() -> None:
    # A crash left 0..4 (an idle-timeout close) but no commit; the replay cuts 0..9.
    store, clock = MemoryStore(), Clock()
    crashed = sink(clock)
    crashed.add(records(1))
    drain(crashed, store, now=1e9)
    replay = sink()
    replay.add(records(2))
    (outcome,) = drain(replay, store)
    assert outcome.commit == {(TOPIC, 0): 5}
    assert outcome.seek == {(TOPIC, 0): 5}


def test_an_existing_longer_object_is_trusted_and_its_records_are_not_written_again() -> None:
    store = MemoryStore()
    earlier = sink()
    earlier.add(records(2))
    drain(earlier, store)  # 0..9
    replay = sink(Clock(), max_records=10)
    replay.add(records(1))
    (outcome,) = drain(replay, store, now=1e9)  # 0..4, closed idle
    assert outcome.commit == {(TOPIC, 0): 10}
    assert outcome.seek == {(TOPIC, 0): 10}
    assert list(store.objects) == [name(0)]


def test_an_undecodable_record_is_dead_lettered_before_the_object_whose_range_holds_it() -> None:
    store, s = MemoryStore(), sink(max_records=3)
    good = records(1)
    bad = Message(topic=TOPIC, partition=0, offset=1, value=b"garbage")
    s.add([good[0], bad, *[Message(topic=TOPIC, partition=0, offset=2, value=good[1].value())]])
    (outcome,) = drain(s, store)
    keys = [w.key for w in outcome.written]
    assert keys == [layout.dead_letter_key("p", TOPIC, 0, 1), name(0)]
    assert outcome.commit == {(TOPIC, 0): 3}
    assert len(decode_object(name(0), store.objects[name(0)])) == 2


def test_avro_objects_are_written_the_same_way() -> None:
    store, s = MemoryStore(), sink(fmt="avro")
    s.add(records(2))
    drain(s, store)
    assert list(store.objects) == [name(0, "avro")]
    assert len(decode_object(name(0, "avro"), store.objects[name(0, "avro")])) == 10


def test_an_object_records_the_offsets_it_does_not_hold_so_a_reader_can_place_each_record() -> None:
    store, s = MemoryStore(), sink()
    held = [0, 1, 3, 4, 7]  # 2, 5 and 6: transaction markers
    s.add([Message(topic=TOPIC, partition=0, offset=o, value=m.value()) for o, m in
           zip(held, records(1), strict=True)])  # fmt: skip
    drain(s, store, now=10_000)
    key = parse_archive_key("p", name(0))
    assert key is not None
    positions = batch_positions(key, store.meta[name(0)])
    assert list(positions.offsets()) == held


def test_an_object_closes_at_max_gaps_so_its_metadata_stays_small() -> None:
    store, s = MemoryStore(), sink(max_records=1000)
    events = records(30)  # 150 records, every other offset a marker
    s.add([Message(topic=TOPIC, partition=0, offset=2 * i, value=m.value())
           for i, m in enumerate(events)])  # fmt: skip
    drain(s, store, now=10_000)
    first = store.meta[name(0)]
    assert len(decode_gaps(first[GAPS])) == MAX_GAPS
    assert int(first[RECORDS]) == MAX_GAPS + 1
