"""The Avro codec: every event type survives a round trip, and the schema and code agree."""

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.events import EVENT_TYPES, StepIdentity, Timing, stamp_events
from engine.steps.base import EventDraft
from schemas.codec import (
    MAGIC,
    EncodedSnapshot,
    EventCodec,
    SchemaMismatchError,
    event_to_json_dict,
    load_schema,
)

WHO = StepIdentity("demo", 3, "premier", "Premier", 2, "host-1", "0.1.0")
TIMING = Timing(1_764_000_000_100, 1_764_000_000_142, 7)


def full_draft(type_: str) -> EventDraft:
    return EventDraft(
        type=type_,
        outcome="error" if type_.endswith("error") else "success",
        reason="why",
        vars={
            "lead.email": "a@b.co",
            "lead.age": 42,
            "lead.score": 0.5,
            "lead.ok": True,
            "lead.none": None,
        },
        appended={"appended.premier.id": "B-1"},
        entity_id="premier",
        request={
            "method": "POST",
            "uri": "http://b/x",
            "headers": {"Idempotency-Key": "k"},
            "body": "{}",
        },
        response={"status": 200, "status_text": "OK", "headers": {}, "body": "{}", "timestamp": 5},
        cost=1.25,
        revenue=30.0,
        wait_ms=40,
    )


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_every_event_type_round_trips(type_: str) -> None:
    codec = EventCodec()
    [event] = stamp_events(
        [full_draft(type_)], WHO, "01LEAD", 1_764_000_000_000, {"lead.id": "01LEAD"}, TIMING
    )
    decoded = codec.decode(codec.encode(event))
    assert decoded["timestamp"] == datetime.fromtimestamp(TIMING.end_ms / 1000, UTC)
    assert {**decoded, "timestamp": event["timestamp"], "expires_at": event["expires_at"]} == event


def test_schema_fields_and_engine_events_cannot_drift() -> None:
    [event] = stamp_events([full_draft("flow.completed")], WHO, "01LEAD", 0, {}, TIMING)
    schema_fields = [f["name"] for f in load_schema()["fields"]]
    assert list(event) == schema_fields


def test_framing_is_avro_single_object_encoding() -> None:
    codec = EventCodec()
    [event] = stamp_events([full_draft("source.accepted")], WHO, "01LEAD", 0, {}, TIMING)
    data = codec.encode(event)
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == codec.fingerprint
    assert len(codec.fingerprint) == 8


@pytest.mark.parametrize("garbage", [b"", b"hello", b"\xc3\x01" + b"\x00" * 8 + b"x", b"\xc3\x01"])
def test_garbage_is_a_schema_mismatch_not_a_crash(garbage: bytes) -> None:
    with pytest.raises(SchemaMismatchError):
        EventCodec().decode(garbage)


def test_truncated_body_is_a_schema_mismatch() -> None:
    codec = EventCodec()
    [event] = stamp_events([full_draft("source.accepted")], WHO, "01LEAD", 0, {}, TIMING)
    with pytest.raises(SchemaMismatchError):
        codec.decode(codec.encode(event)[:40])


def test_json_form_uses_iso_timestamps_and_epoch_ms_durations() -> None:
    codec = EventCodec()
    [event] = stamp_events([full_draft("source.accepted")], WHO, "01LEAD", 0, {}, TIMING)
    as_json = event_to_json_dict(codec.decode(codec.encode(event)))
    assert as_json["timestamp"] == "2025-11-24T16:00:00.142Z"
    assert as_json["start_timestamp"] == TIMING.start_ms
    assert as_json["expires_at"] == "2026-02-22T16:00:00.142Z"


snapshot_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)


@given(st.dictionaries(st.text(max_size=20), snapshot_values, max_size=20))
def test_a_step_writes_the_snapshot_it_read_byte_for_byte_as_a_fresh_encoding(
    snapshot: dict[str, Any],
) -> None:
    codec = EventCodec()
    [previous] = stamp_events([full_draft("filter.passed")], WHO, "01LEAD", 0, snapshot, TIMING)
    handed_off = codec.decode_handoff(codec.encode(previous))
    assert isinstance(handed_off["vars"], EncodedSnapshot)
    assert handed_off["vars"] == previous["vars"]
    assert handed_off["lead_id"] == "01LEAD"
    # The next step passes the snapshot on unchanged: its bytes are spliced in, and the
    # event is exactly what encoding it from scratch would give.
    [next_event] = stamp_events(
        [EventDraft("filter.failed", "failure", "no")], WHO, "01LEAD", 0, handed_off["vars"], TIMING
    )
    assert next_event["vars"] is handed_off["vars"]
    spliced = codec.encode(next_event)
    assert spliced == codec.encode({**next_event, "vars": dict(next_event["vars"])})
    assert codec.decode(spliced)["vars"] == previous["vars"]


def test_a_handed_off_snapshot_cannot_be_changed_in_place() -> None:
    codec = EventCodec()
    [event] = stamp_events([full_draft("filter.passed")], WHO, "01LEAD", 0, {"a": 1}, TIMING)
    snapshot = codec.decode_handoff(codec.encode(event))["vars"]
    with pytest.raises(TypeError, match="read-only"):
        snapshot["a"] = 2
    with pytest.raises(TypeError, match="read-only"):
        snapshot.update(a=2)
    assert {**snapshot, "a": 2} == {**event["vars"], "a": 2}  # a changed copy is a plain dict


def test_a_step_does_not_decode_the_previous_steps_outputs() -> None:
    codec = EventCodec()
    [event] = stamp_events([full_draft("recipient.delivered")], WHO, "01LEAD", 0, {}, TIMING)
    handed_off = codec.decode_handoff(codec.encode(event))
    assert "request" not in handed_off and "appended" not in handed_off
    assert handed_off["type"] == "recipient.delivered"


@pytest.mark.parametrize("garbage", [b"", b"\xc3\x01", b"\xc3\x01" + b"\x00" * 8 + b"\xff"])
def test_a_handoff_that_is_not_an_event_is_a_schema_mismatch(garbage: bytes) -> None:
    with pytest.raises(SchemaMismatchError):
        EventCodec().decode_handoff(garbage)


def test_a_truncated_handoff_is_a_schema_mismatch() -> None:
    codec = EventCodec()
    [event] = stamp_events([full_draft("filter.passed")], WHO, "01LEAD", 0, {"a": "b"}, TIMING)
    with pytest.raises(SchemaMismatchError):
        codec.decode_handoff(codec.encode(event)[:40])
