"""Registry mode's framing: the Confluent wire format, read beside single-object encoding."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.codec import EventCodec, UnknownSchemaIdError, historical_schemas, load_schema
from tests.factories import make_lead_events

EVENT = make_lead_events()[1]


def test_the_wire_format_is_magic_zero_the_id_big_endian_then_the_same_avro_body() -> None:
    single = EventCodec()
    wire = EventCodec(schema_id=258)
    data = wire.encode(EVENT)
    assert data[:5] == b"\x00\x00\x00\x01\x02"
    assert data[5:] == single.encode(EVENT)[10:]
    assert wire.encoding == "registry" and single.encoding == "single-object"


def test_one_reader_takes_both_encodings_by_the_first_byte() -> None:
    asked: list[int] = []

    def resolve(schema_id: int) -> dict[str, Any] | None:
        asked.append(schema_id)
        return load_schema()

    reader = EventCodec(resolve=resolve)
    wire = EventCodec(schema_id=7).encode(EVENT)
    decoded = reader.decode(wire)
    assert decoded == reader.decode(EventCodec().encode(EVENT))
    assert decoded["id"] == EVENT["id"]
    assert reader.decode_handoff(wire)["vars"] == EVENT["vars"]
    assert asked == [7]  # resolved once, then cached


def test_an_old_version_registered_under_an_id_is_read_with_its_own_writer_schema() -> None:
    v3 = historical_schemas()[-1]
    old = {k: v for k, v in EVENT.items() if k in {f["name"] for f in v3["fields"]}}
    data = EventCodec(v3, schema_id=1).encode(old)
    decoded = EventCodec(resolve=lambda _: v3).decode(data)
    assert decoded["total_ms"] == old["total_ms"]


def test_an_unknown_schema_id_is_an_error_naming_the_id() -> None:
    data = EventCodec(schema_id=4242).encode(EVENT)
    with pytest.raises(UnknownSchemaIdError, match="unknown schema id 4242") as caught:
        EventCodec(resolve=lambda _: None).decode(data)
    assert caught.value.schema_id == 4242
    with pytest.raises(UnknownSchemaIdError):
        EventCodec().decode_handoff(data)  # no registry to ask at all


def test_a_timing_beyond_the_old_int_range_is_written_and_read_back() -> None:
    weeks_ms = 40 * 24 * 3600 * 1000  # 40 days: past an int's 24.8
    event = {**EVENT, "total_ms": weeks_ms, "lag_ms": weeks_ms}
    codec = EventCodec()
    assert codec.decode(codec.encode(event))["total_ms"] == weeks_ms
