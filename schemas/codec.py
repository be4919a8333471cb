"""Encode and decode lead events as Avro single-object encoding.

Framing (the Avro specification's "single-object encoding", no registry needed):

    byte 0-1   0xC3 0x01                       marker
    byte 2-9   CRC-64-AVRO fingerprint of the writer schema's parsing canonical
               form, little-endian
    byte 10-   Avro binary encoding of the record

Any Avro library can decode a message: look the fingerprint up among the known
writer schemas (``schemas/*.avsc``), then read the body with it.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, NoReturn

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.compiled_writer import SlowPath, record_encoder

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


class SchemaMismatchError(ValueError):
    """The bytes are not a leadflow event written with a known schema."""


def load_schema(name: str = "lead_event.avsc") -> dict[str, Any]:
    text = resources.files("schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def historical_schemas() -> list[dict[str, Any]]:
    """Every earlier version of the event schema, oldest first (``schemas/history``)."""
    folder = resources.files("schemas").joinpath("history")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".avsc"))
    return [json.loads(folder.joinpath(n).read_text(encoding="utf-8")) for n in names]


SNAPSHOT_FIELD = "vars"


class EncodedSnapshot(dict[str, Any]):
    """A lead snapshot (``vars``) decoded from an event, holding the Avro bytes it came from.

    Every event carries the full snapshot, and most steps pass it on unchanged (a
    filter, a failed delivery, ``flow.completed``): re-encoding it is most of a step's
    CPU. An event whose ``vars`` *is* an ``EncodedSnapshot`` is written with those
    bytes spliced in (byte-identical to encoding the map again). It is read-only so
    the bytes can never go stale: a step that changes the snapshot builds a new dict.
    """

    __slots__ = ("avro",)

    def __init__(self, values: dict[str, Any], avro: bytes) -> None:
        super().__init__(values)
        self.avro = avro

    def _read_only(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError("an event's snapshot is read-only: build a new dict to change it")

    __setitem__ = __delitem__ = __ior__ = _read_only
    update = pop = popitem = clear = setdefault = _read_only


class EventCodec:
    """Encoder/decoder with the parsed schema cached once per process.

    fastavro re-parses a dict schema on every call unless it is given the
    parsed form; caching it is the difference between ~45k and ~130k
    records/s on one core.

    The current schema is also cut in three around ``vars`` (an Avro record is its
    fields' encodings back to back, so the parts concatenate to the whole): steps
    decode only the head and the snapshot of their input (``decode_handoff``) and
    write the snapshot back as the bytes they read.
    """

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        raw = schema if schema is not None else load_schema()
        self.schema = fastavro.parse_schema(raw)
        self.fingerprint = bytes.fromhex(
            fingerprint(to_parsing_canonical_form(self.schema), "CRC-64-AVRO")
        )
        self.header = MAGIC + self.fingerprint
        self._writers: dict[bytes, Any] = {self.fingerprint: self.schema}
        # Events written by earlier versions stay readable: their writer schema
        # is resolved against the current one (new fields take their defaults).
        for old in historical_schemas():
            parsed = fastavro.parse_schema(old)
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
            self._writers.setdefault(fp, parsed)
        self._head, self._snapshot, self._tail = _split_at_snapshot(raw)
        # Compiled writers (schemas.compiled_writer) for the whole record and for the
        # parts around the snapshot: about twice fastavro's speed on these records.
        self._write_all = record_encoder(self.schema)
        self._write_head = record_encoder(self._head)
        self._write_tail = record_encoder(self._tail)

    def encode(self, event: dict[str, Any]) -> bytes:
        snapshot = event.get(SNAPSHOT_FIELD)
        try:
            if isinstance(snapshot, EncodedSnapshot):
                return b"".join(
                    (self.header, self._write_head(event), snapshot.avro, self._write_tail(event))
                )
            return self.header + self._write_all(event)
        except SlowPath:
            return self._encode_with_fastavro(event)

    def _encode_with_fastavro(self, event: dict[str, Any]) -> bytes:
        """Values the compiled writers leave to fastavro (datetimes, out-of-range or
        mistyped values): fastavro converts them, or raises its own error."""
        buf = io.BytesIO()
        buf.write(self.header)
        snapshot = event.get(SNAPSHOT_FIELD)
        if isinstance(snapshot, EncodedSnapshot):
            fastavro.schemaless_writer(buf, self._head, event)
            buf.write(snapshot.avro)
            fastavro.schemaless_writer(buf, self._tail, event)
        else:
            fastavro.schemaless_writer(buf, self.schema, event)
        return buf.getvalue()

    def decode_handoff(self, data: bytes) -> dict[str, Any]:
        """What the next step reads of an event: the fields before ``vars`` (ids, type,
        timings) and ``vars`` as an ``EncodedSnapshot``; the previous step's own outputs
        after it (appended, request, response...) are not decoded.

        An event written with an older schema is decoded whole (its snapshot bytes
        are not in the current layout, so it is re-encoded when written on).
        """
        writer = self._writer(data)
        if writer is not self.schema:
            return self.decode(data)
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            head = fastavro.schemaless_reader(buf, self._head, None)
            start = buf.tell()
            values = fastavro.schemaless_reader(buf, self._snapshot, None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise SchemaMismatchError(f"undecodable event body: {exc}") from exc
        if not isinstance(head, dict) or not isinstance(values, dict):
            raise SchemaMismatchError("event body is not a record")
        head[SNAPSHOT_FIELD] = EncodedSnapshot(values, data[start : buf.tell()])
        return head

    def _writer(self, data: bytes) -> Any:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise SchemaMismatchError("not an Avro single-object encoded message")
        writer = self._writers.get(data[2:HEADER_LEN])
        if writer is None:
            raise SchemaMismatchError(f"unknown writer schema fingerprint {data[2:10].hex()}")
        return writer

    def decode(self, data: bytes) -> dict[str, Any]:
        writer = self._writer(data)
        # Same schema: no reader schema, so fastavro skips resolution altogether.
        reader = None if writer is self.schema else self.schema
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise SchemaMismatchError(f"undecodable event body: {exc}") from exc
        if not isinstance(record, dict):
            raise SchemaMismatchError("event body is not a record")
        return record


def _split_at_snapshot(schema: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The record's fields before ``vars``, ``vars`` itself, and the fields after it,
    each parsed on its own (named types must not cross the cut; parsing checks it)."""
    fields = schema["fields"]
    at = [f["name"] for f in fields].index(SNAPSHOT_FIELD)
    namespace = schema.get("namespace")

    def part(name: str, part_fields: list[dict[str, Any]]) -> Any:
        return fastavro.parse_schema(
            {"type": "record", "name": name, "namespace": namespace, "fields": part_fields}
        )

    return (
        part("LeadEventHead", fields[:at]),
        fastavro.parse_schema(fields[at]["type"]),
        part("LeadEventTail", fields[at + 1 :]),
    )


@cache
def default_codec() -> EventCodec:
    return EventCodec()


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, int):
        return (
            datetime.fromtimestamp(value / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    return value


def event_to_json_dict(event: dict[str, Any]) -> dict[str, Any]:
    """The event as LeadConduit-style JSON: ISO 8601 ``timestamp``/``expires_at``,
    epoch-ms ``start_timestamp``/``end_timestamp``, everything else as is."""
    out = dict(event)
    out["timestamp"] = _iso(event["timestamp"])
    out["expires_at"] = _iso(event["expires_at"])
    return out


def _from_iso(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.fromisoformat(value).astimezone(UTC)
    return value


def event_from_json_dict(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``event_to_json_dict``: an archived JSON event (a per-event object or a
    ``jsonl.gz`` line) as the codec decodes it, with ``timestamp``/``expires_at`` as datetimes.
    ``KeyError`` or ``ValueError`` when it is not one."""
    out = dict(data)
    out["timestamp"] = _from_iso(data["timestamp"])
    out["expires_at"] = _from_iso(data["expires_at"])
    return out
