"""Specification of archived positions: which keys are events, their time order, what
``--to`` reads, and how a batched object's records get their offsets back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.objects.positions import (
    FIRST_OFFSET,
    GAPS,
    LAST_OFFSET,
    RECORDS,
    ArchiveKey,
    PositionError,
    batch_positions,
    decode_gaps,
    encode_gaps,
    event_metadata,
    event_position,
    parse_archive_key,
    up_to,
)

P = "arch/x"
T = "leadflow.f.events.source"
DIR16 = f"{P}/flow_id=f/dt=2026-03-01/hour=16"
DIR17 = f"{P}/flow_id=f/dt=2026-03-01/hour=17"
H16 = datetime(2026, 3, 1, 16, tzinfo=UTC)
H17 = datetime(2026, 3, 1, 17, tzinfo=UTC)


def batch(directory: str, partition: int, first: int, ext: str = "jsonl.gz") -> str:
    return f"{directory}/{T}+{partition}+{first:019d}.{ext}"


def test_keys_say_format_hour_and_kafka_range() -> None:
    assert parse_archive_key(P, batch(DIR16, 2, 40)) == ArchiveKey(
        batch(DIR16, 2, 40), "jsonl.gz", H16, T, 2, 40
    )
    assert parse_archive_key(P, batch(DIR17, 0, 7, "avro")) == ArchiveKey(
        batch(DIR17, 0, 7, "avro"), "avro", H17, T, 0, 7
    )
    assert parse_archive_key(P, f"{DIR16}/L1/E1.json") == ArchiveKey(
        f"{DIR16}/L1/E1.json", "json", H16
    )
    assert parse_archive_key(P, f"{P}/L1/E1.json") == ArchiveKey(f"{P}/L1/E1.json", "json", None)


@pytest.mark.parametrize(
    "key",
    [
        f"{P}/_dead_letter/{T}+0+{3:019d}.bin",
        f"{P}/leadflow_verification_abc.txt",
        f"{P}x/L1/E1.json",  # another prefix that starts alike
        "other/L1/E1.json",
        f"{P}/E1.json",  # not under a lead
        f"{DIR16}/{T}+0+12.jsonl.gz",  # offset not zero-padded: not the streamer's
        f"{DIR16}/notes.txt",
    ],
)
def test_what_is_not_an_event_object_is_not_read(key: str) -> None:
    assert parse_archive_key(P, key) is None


def keys(*names: str) -> list[ArchiveKey]:
    found = [parse_archive_key(P, n) for n in names]
    return [k for k in found if k is not None]


def test_objects_are_in_time_order_and_a_partitions_objects_by_offset() -> None:
    listed = keys(batch(DIR17, 0, 90), batch(DIR16, 1, 5), batch(DIR16, 0, 50), batch(DIR16, 0, 0))
    assert [k.key for k in up_to(listed, None)] == [
        batch(DIR16, 0, 0), batch(DIR16, 0, 50), batch(DIR16, 1, 5), batch(DIR17, 0, 90)
    ]  # fmt: skip


def test_to_ends_each_partitions_run_at_its_first_later_object() -> None:
    # Partition 0's hour-17 object starts at 60; its hour-16 object at 80 (an event stamped
    # late) comes after it in Kafka, so reading it would hand over past 60..79 unread.
    listed = keys(
        batch(DIR16, 0, 0), batch(DIR17, 0, 60), batch(DIR16, 0, 80), batch(DIR16, 1, 0),
        f"{DIR16}/L1/E1.json", f"{DIR17}/L1/E2.json", f"{P}/L2/E3.json",
    )  # fmt: skip
    read = {k.key for k in up_to(listed, datetime(2026, 3, 1, 16, 59, tzinfo=UTC))}
    assert read == {batch(DIR16, 0, 0), batch(DIR16, 1, 0), f"{DIR16}/L1/E1.json",
                    f"{P}/L2/E3.json"}  # fmt: skip


def meta(first: int, last: int, records: int, gaps: str | None = None) -> dict[str, str]:
    out = {FIRST_OFFSET: str(first), LAST_OFFSET: str(last), RECORDS: str(records)}
    if gaps is not None:
        out[GAPS] = gaps
    return out


def test_a_batched_objects_offsets_skip_its_gaps() -> None:
    key = parse_archive_key(P, batch(DIR16, 0, 100))
    assert key is not None
    # 100, 101, [102 marker], 103, [104-105 markers/dead letter], 106
    positions = batch_positions(key, meta(100, 106, 4, encode_gaps([(2, 1), (4, 2)])))
    assert list(positions.offsets()) == [100, 101, 103, 106]
    assert list(batch_positions(key, meta(100, 102, 3)).offsets()) == [100, 101, 102]
    assert decode_gaps("2:1,4:2") == [(2, 1), (4, 2)]


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        ({}, "no Kafka range"),
        (meta(99, 106, 4, ""), "the key says 100"),
        (meta(100, 106, 4), "no leadflow_gaps"),  # not contiguous, written before gaps were
        (meta(100, 103, 4, "2:1"), "do not fit"),
        (meta(100, 106, 4, "2-1"), "start:length"),
    ],
)
def test_a_batched_object_whose_positions_do_not_add_up_is_refused(
    metadata: dict[str, str], why: str
) -> None:
    key = parse_archive_key(P, batch(DIR16, 0, 100))
    assert key is not None
    with pytest.raises(PositionError, match=why):
        batch_positions(key, metadata)


def test_a_per_event_objects_position_round_trips() -> None:
    assert event_position(event_metadata(T, 2, 41)) == (T, 2, 41)
    with pytest.raises(PositionError, match="no Kafka position"):
        event_position({})
