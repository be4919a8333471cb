"""Specification of batched encodings: deterministic bytes, and read back into the same events."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest

from engine.destinations import Format
from schemas.codec import EventCodec, event_to_json_dict
from streamers.formats import avro_sync_marker, batch_encoder, event_json
from streamers.readback import decode_object
from tests.factories import make_lead_events

CODEC = EventCodec()


def decoded_events(leads: int) -> list[dict[str, Any]]:
    return [CODEC.decode(CODEC.encode(e)) for _ in range(leads) for e in make_lead_events("f")]


def encode(fmt: Format, key: str, events: list[dict[str, Any]]) -> bytes:
    encoder = batch_encoder(fmt, key)
    for event in events:
        encoder.add(event)
    with encoder.finish() as file:
        return file.read()


@pytest.mark.parametrize("fmt", ["jsonl.gz", "avro"])
def test_the_same_records_under_the_same_name_encode_to_identical_bytes(fmt: Format) -> None:
    events = decoded_events(40)
    assert encode(fmt, "p/t+0+1", events) == encode(fmt, "p/t+0+1", events)


@pytest.mark.parametrize(("fmt", "ext"), [("jsonl.gz", "jsonl.gz"), ("avro", "avro")])
def test_a_batch_reads_back_as_the_per_event_json_of_each_record(fmt: Format, ext: str) -> None:
    events = decoded_events(40)
    body = encode(fmt, f"p/t+0+1.{ext}", events)
    expected = [orjson.loads(event_json(e)) for e in events]
    assert decode_object(f"p/t+0+1.{ext}", body) == expected


def test_jsonl_gz_is_one_event_json_per_line() -> None:
    events = decoded_events(2)
    lines = gzip.decompress(encode("jsonl.gz", "k", events)).splitlines()
    assert [orjson.loads(line) for line in lines] == [
        orjson.loads(orjson.dumps(event_to_json_dict(e))) for e in events
    ]


def test_the_avro_sync_marker_is_16_bytes_fixed_by_the_name() -> None:
    assert len(avro_sync_marker("a")) == 16
    assert avro_sync_marker("a") == avro_sync_marker("a") != avro_sync_marker("b")


def test_a_per_event_object_reads_back_as_one_event() -> None:
    event = decoded_events(1)[0]
    assert decode_object("p/l/e.json", event_json(event)) == [orjson.loads(event_json(event))]
