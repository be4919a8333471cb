"""What a batch of Kafka records becomes before it touches Postgres: rows, rejects, next offsets."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from projectors.batch import EVENT_COLUMNS, Record, UnstorableEventError, build_batch, event_row
from schemas.codec import EventCodec, event_to_json_dict
from tests.factories import make_event, make_lead_events

CODEC = EventCodec()
TOPIC = "leadflow.f.events.source"
COLUMNS = [name for name, _ in EVENT_COLUMNS]


def record(offset: int, value: bytes | None, partition: int = 0) -> Record:
    return Record(TOPIC, partition, offset, value, b"lead-key")


def test_an_event_becomes_one_row_with_every_column_and_its_kafka_position() -> None:
    event = CODEC.decode(CODEC.encode(make_lead_events(flow_id="f")[1]))
    row = dict(zip(COLUMNS, event_row(event, record(41, None, partition=2)), strict=True))

    assert row["id"] == event["id"]
    assert row["type"] == "source.accepted"
    assert row["outcome"] == "success"
    assert row["cost"] == 2.5
    assert row["ts"] == event["timestamp"]
    assert row["ts"].tzinfo is not None
    assert isinstance(row["expires_at"], datetime)
    assert orjson.loads(row["snapshot"]) == orjson.loads(orjson.dumps(event_to_json_dict(event)))
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (TOPIC, 2, 41)


def test_the_snapshot_is_leadconduit_style_json_with_iso_timestamps() -> None:
    event = CODEC.decode(CODEC.encode(make_event()))
    snapshot = orjson.loads(event_row(event, record(0, None))[COLUMNS.index("snapshot")])

    assert snapshot["timestamp"] == event["timestamp"].astimezone(UTC).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    assert snapshot["start_timestamp"] == event["start_timestamp"]  # epoch ms, as LeadConduit
    assert snapshot["vars"]["lead.email"] == "ada@example.com"


def test_a_batch_holds_the_rows_and_per_partition_the_offset_after_its_last_record() -> None:
    events = make_lead_events(flow_id="f")
    records = [record(10 + i, CODEC.encode(e), partition=i % 2) for i, e in enumerate(events)]

    batch = build_batch(CODEC, records)

    assert [row[0] for row in batch.events] == [e["id"] for e in events]
    assert batch.rejects == []
    assert batch.next_offsets == {(TOPIC, 0): 15, (TOPIC, 1): 14}
    assert batch.records == 5


@pytest.mark.parametrize(
    "value",
    [b"not avro", b"", None, b"\xc3\x01" + b"\x00" * 8 + b"xx"],
    ids=["garbage", "empty", "tombstone", "unknown-fingerprint"],
)
def test_an_undecodable_record_is_rejected_with_its_reason_and_still_moves_the_checkpoint(
    value: bytes | None,
) -> None:
    good = CODEC.encode(make_event())
    batch = build_batch(CODEC, [record(0, good), record(1, value), record(2, good)])

    assert len(batch.events) == 2
    [reject] = batch.rejects
    assert reject.record.offset == 1
    assert reject.record.value == value
    assert reject.error.startswith("SchemaMismatchError: ")
    assert batch.next_offsets == {(TOPIC, 0): 3}


def test_a_nul_character_is_projected_as_a_replacement_character_not_lost() -> None:
    # Postgres text and jsonb cannot hold NUL; a lead field with one must not cost the
    # lead its event in the timeline (a literal backslash-u0000 text stays as it is).
    event = make_event(reason="bad\x00byte")
    event["vars"] = {**event["vars"], "lead.comments": "a\x00b", "lead.note": "\\u0000"}
    [row] = build_batch(CODEC, [record(0, CODEC.encode(event))]).events

    assert row[COLUMNS.index("reason")] == "bad\ufffdbyte"
    snapshot = orjson.loads(row[COLUMNS.index("snapshot")])
    assert snapshot["vars"]["lead.comments"] == "a\ufffdb"
    assert snapshot["vars"]["lead.note"] == "\\u0000"


@pytest.mark.parametrize(("field", "value"), [("ms", 2**31), ("step_count", -(2**31) - 1)])
def test_an_event_with_a_number_out_of_postgres_range_is_rejected(field: str, value: int) -> None:
    # Avro varints decode to whatever size was written, whatever the schema says.
    batch = build_batch(CODEC, [record(0, CODEC.encode(make_event(**{field: value})))])

    assert batch.events == []
    assert batch.rejects[0].error == (
        f"UnstorableEventError: {field}={value} is out of range for Postgres"
    )


def test_a_bigint_column_has_its_range_checked_too() -> None:
    with pytest.raises(UnstorableEventError, match="total_ms"):
        event_row(make_event(total_ms=2**63), record(0, None))
