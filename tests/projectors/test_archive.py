"""Specification of reading the archive back, on an in-memory store (the stack tests read
SeaweedFS and Azurite): every format gives each event at its Kafka offset; bad input is
reported by key and line, never raised; and where the topics must take over."""

from __future__ import annotations

import gzip
import io
from typing import Any

import orjson
import pytest
from fastavro import writer

from engine.errors import ConfigError
from engine.objects.positions import (
    FIRST_OFFSET,
    GAPS,
    LAST_OFFSET,
    RECORDS,
    event_metadata,
    parse_archive_key,
)
from projectors.archive import (
    ArchivedEvent,
    ArchiveReader,
    BadInput,
    archive_destination,
    archive_objects,
)
from projectors.archive_replay import gaps
from schemas.codec import default_codec, event_to_json_dict
from tests.factories import make_lead_events
from tests.streamers.memory_store import MemoryStore

P = "arch"
T = "leadflow.f.events.source"
DIR = f"{P}/flow_id=f/dt=2025-11-24/hour=16"
CODEC = default_codec()


def events(n: int) -> list[dict[str, Any]]:
    made = [e for i in range(n) for e in make_lead_events("f", submitted_ms=1_764_003_000_000 + i)]
    return [CODEC.decode(CODEC.encode(e)) for e in made][:n]


def jsonl_gz(rows: list[dict[str, Any]]) -> bytes:
    return gzip.compress(b"".join(orjson.dumps(event_to_json_dict(e)) + b"\n" for e in rows))


def avro(rows: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    writer(out, CODEC.schema, rows, codec="deflate")
    return out.getvalue()


def put_batch(store: MemoryStore, first: int, body: bytes, records: int, gap: str, ext: str) -> str:
    key = f"{DIR}/{T}+0+{first:019d}.{ext}"
    last = first + records - 1 + sum(int(g.split(":")[1]) for g in gap.split(",") if g)
    metadata = {FIRST_OFFSET: str(first), LAST_OFFSET: str(last), RECORDS: str(records)}
    store.put_file_if_absent(key, io.BytesIO(body), "x", {**metadata, GAPS: gap})
    return key


def read(store: MemoryStore) -> tuple[list[ArchivedEvent], list[BadInput]]:
    bad: list[BadInput] = []
    read = list(ArchiveReader(store, bad.append).read(archive_objects(store, P), lambda _: None))
    return read, bad


@pytest.mark.parametrize("ext", ["jsonl.gz", "avro"])
def test_a_batched_objects_events_come_back_at_their_offsets(ext: str) -> None:
    store, rows = MemoryStore(), events(4)
    body = jsonl_gz(rows) if ext == "jsonl.gz" else avro(rows)
    put_batch(store, 10, body, 4, "1:1", ext)  # 10, [11 marker], 12, 13, 14
    got, bad = read(store)
    assert bad == []
    assert [(e.topic, e.partition, e.offset) for e in got] == [(T, 0, o) for o in (10, 12, 13, 14)]
    assert [e.event for e in got] == rows


def test_a_per_event_objects_event_comes_back_at_its_recorded_position() -> None:
    store, (row,) = MemoryStore(), events(1)
    body = orjson.dumps(event_to_json_dict(row))
    store.put_file_if_absent(f"{P}/L/E.json", io.BytesIO(body), "x", event_metadata(T, 2, 9))
    store.put_if_absent(f"{P}/L/old.json", body, "x")  # written before positions were recorded
    got, bad = read(store)
    assert got == [ArchivedEvent(T, 2, 9, row)]
    assert [(b.key, b.line) for b in bad] == [(f"{P}/L/old.json", None)]
    assert "no Kafka position" in bad[0].error


def test_bad_objects_and_lines_are_reported_by_key_and_line_and_the_rest_is_read() -> None:
    store, rows = MemoryStore(), events(3)
    good = put_batch(store, 0, jsonl_gz(rows), 3, "", "jsonl.gz")
    whole = jsonl_gz(rows)
    truncated = put_batch(store, 10, whole[: len(whole) - 12], 3, "", "jsonl.gz")
    not_gzip = put_batch(store, 20, b'{"id": 1}\n', 3, "", "jsonl.gz")
    lines = [orjson.dumps(event_to_json_dict(e)) for e in rows]
    lines[1] = b'{"id": "unterminated'
    bad_line = put_batch(store, 30, gzip.compress(b"\n".join(lines) + b"\n"), 3, "", "jsonl.gz")
    bad_avro = put_batch(store, 40, avro(rows)[:-20], 3, "", "avro")
    got, bad = read(store)
    reported = {b.key: b for b in bad}
    assert set(reported) == {truncated, not_gzip, bad_line, bad_avro}
    assert "truncated" in reported[truncated].error
    assert "not gzip" in reported[not_gzip].error and reported[not_gzip].line == 1
    assert reported[bad_line].line == 2 and "JSONDecodeError" in reported[bad_line].error
    assert "not Avro, or truncated" in reported[bad_avro].error
    offsets = {(e.offset) for e in got}
    assert {0, 1, 2, 30, 32} <= offsets and 31 not in offsets  # the bad line is skipped
    assert good in {a.key for a in archive_objects(store, P)}


def test_the_topics_take_over_where_the_archive_ends_and_a_gap_is_found() -> None:
    earliest = {(T, 0): 50, (T, 1): 0, (T, 2): 30}
    # Partition 0 continues at 50 (the topic holds it), 2 ends at 20 while Kafka starts at 30.
    assert gaps({(T, 0): 50, (T, 2): 20}, earliest, from_start=True) == {(T, 2): (20, 30)}
    # A partition the archive does not hold: offset 0 from the start; from a time, its topic.
    assert gaps({}, earliest, from_start=True) == {(T, 0): (0, 50), (T, 2): (0, 30)}
    assert gaps({}, earliest, from_start=False) == {}


def test_an_archive_is_named_by_url() -> None:
    s3 = archive_destination("s3://leadflow-events/a/b")
    assert (s3.kind, s3.bucket, s3.prefix) == ("s3", "leadflow-events", "a/b")
    azure = archive_destination("azure://leadflow-events/a")
    assert (azure.kind, azure.bucket, azure.prefix) == ("azure_blob", "leadflow-events", "a")
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        archive_destination("gs://x/y")
    assert parse_archive_key(P, f"{DIR}/{T}+0+{0:019d}.avro") is not None
