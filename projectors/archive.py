"""Reading the streamer's archive back: objects in time order, each read as a stream, each
event with the Kafka position it had (``engine.objects.positions``).

Both layouts are read, chosen per object by its key: per-event ``.json`` objects, and
batched ``.jsonl.gz`` (one JSON event per line) and ``.avro`` (an object container file
of ``schemas/lead_event.avsc``). A batched object is never held whole in memory: gzip is
inflated chunk by chunk as it downloads, Avro read block by block.

Bad input is data: an object that is truncated, not gzip (or not Avro), whose position
is not recorded, or a line that does not parse, becomes a ``BadInput`` naming the key and
line, handed to the caller's hook; the reader goes on with the next line or object. The
caller decides whether that stops the replay (``projectors.archive_replay``).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastavro import reader as avro_reader

from engine.destinations import Destination
from engine.errors import ConfigError
from engine.objects.contract import ObjectStore, directory
from engine.objects.errors import DestinationError
from engine.objects.positions import (
    ArchiveKey,
    PositionError,
    batch_positions,
    event_position,
    parse_archive_key,
    up_to,
)
from schemas.codec import default_codec, event_from_json_dict

# Per-event objects are small and many: fetched this many at a time, in order.
_PER_EVENT_WINDOW = 64
_GZIP_WBITS = 31  # zlib: a gzip header and trailer


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    """One event read from the archive, where it sat in Kafka."""

    topic: str
    partition: int
    offset: int
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadInput:
    """What could not be read: the object's key, the line (or Avro record, 1-based) when
    the fault is in one, and why."""

    key: str
    line: int | None
    error: str

    def __str__(self) -> str:
        where = f"{self.key} line {self.line}" if self.line is not None else self.key
        return f"{where}: {self.error}"


BadInputHook = Callable[[BadInput], None]


def archive_destination(url: str) -> Destination:
    """``s3://bucket/prefix`` or ``azure://container/prefix`` as the destination it names
    (credentials from the settings, as the streamer's defaults)."""
    scheme, sep, rest = url.partition("://")
    kinds = {"s3": "s3", "azure": "azure_blob"}
    if not sep or scheme not in kinds:
        raise ConfigError(f"archive {url!r}: give s3://bucket/prefix or azure://container/prefix")
    bucket, _, prefix = rest.partition("/")
    try:
        return Destination(kind=kinds[scheme], bucket=bucket, prefix=prefix)
    except ValueError as exc:
        raise ConfigError(f"archive {url!r}: {exc}") from None


def archive_objects(
    store: ObjectStore, prefix: str, to_time: datetime | None = None
) -> list[ArchiveKey]:
    """Every event object under ``prefix`` (up to ``to_time``'s hour), in time order."""
    found = (parse_archive_key(prefix, key) for key in store.list_keys(directory(prefix)))
    return up_to([a for a in found if a is not None], to_time)


class ArchiveReader:
    """Reads archived objects of one store into ``ArchivedEvent``s, reporting bad input."""

    def __init__(self, store: ObjectStore, on_bad: BadInputHook) -> None:
        self._store = store
        self._on_bad = on_bad
        self._schema = default_codec().schema

    def read(
        self, objects: Iterable[ArchiveKey], on_object: Callable[[ArchiveKey], None]
    ) -> Iterator[ArchivedEvent]:
        """The events of ``objects``, in their order; ``on_object`` is told of each object
        once its events have all been yielded."""
        pending: list[ArchiveKey] = []
        with ThreadPoolExecutor(8) as pool:
            for archived in objects:
                if not archived.batched:
                    pending.append(archived)
                    if len(pending) >= _PER_EVENT_WINDOW:
                        yield from self._per_event(pool, pending, on_object)
                        pending = []
                    continue
                yield from self._per_event(pool, pending, on_object)
                pending = []
                yield from self._batched(archived)
                on_object(archived)
            yield from self._per_event(pool, pending, on_object)

    # -- per-event objects ----------------------------------------------------------------

    def _per_event(
        self,
        pool: ThreadPoolExecutor,
        window: list[ArchiveKey],
        on_object: Callable[[ArchiveKey], None],
    ) -> Iterator[ArchivedEvent]:
        for archived, event in zip(window, pool.map(self._one_event, window), strict=True):
            if event is not None:
                yield event
            on_object(archived)

    def _one_event(self, archived: ArchiveKey) -> ArchivedEvent | None:
        try:
            topic, partition, offset = event_position(self._store.metadata(archived.key))
            body = self._store.get(archived.key)
        except PositionError as exc:
            self._on_bad(BadInput(archived.key, None, str(exc)))
            return None
        try:
            return ArchivedEvent(topic, partition, offset, _json_event(body))
        except (ValueError, KeyError, TypeError) as exc:
            self._on_bad(BadInput(archived.key, 1, _reason(exc)))
            return None

    # -- batched objects ------------------------------------------------------------------

    def _batched(self, archived: ArchiveKey) -> Iterator[ArchivedEvent]:
        try:
            positions = batch_positions(archived, self._store.metadata(archived.key))
        except PositionError as exc:
            self._on_bad(BadInput(archived.key, None, str(exc)))
            return
        offsets = positions.offsets()
        chunks = self._store.read_chunks(archived.key)
        records = _avro_records if archived.format == "avro" else _jsonl_records
        line = 0
        try:
            for line, event in enumerate(records(chunks, self._schema), start=1):
                offset = next(offsets, None)
                if offset is None:
                    self._on_bad(
                        BadInput(archived.key, line, f"more than {positions.records} records")
                    )
                    return
                if isinstance(event, BadLine):
                    self._on_bad(BadInput(archived.key, line, event.error))
                    continue
                yield ArchivedEvent(positions.topic, positions.partition, offset, event)
        except _UnreadableError as exc:
            self._on_bad(BadInput(archived.key, line + 1, str(exc)))
            return
        if line < positions.records:
            self._on_bad(
                BadInput(
                    archived.key, None, f"{line} records, its metadata says {positions.records}"
                )
            )


@dataclass(frozen=True, slots=True)
class BadLine:
    error: str


class _UnreadableError(Exception):
    """The rest of the object cannot be read (truncated, not gzip, not Avro)."""


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _json_event(body: bytes) -> dict[str, Any]:
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return event_from_json_dict(data)


def _jsonl_records(chunks: Iterator[bytes], _: Any) -> Iterator[dict[str, Any] | BadLine]:
    """Each line of a gzip JSON Lines stream, parsed; inflated as the chunks arrive."""
    inflate = zlib.decompressobj(_GZIP_WBITS)
    rest = b""
    try:
        for chunk in chunks:
            data = rest + inflate.decompress(chunk)
            *lines, rest = data.split(b"\n")
            yield from (_parsed(line) for line in lines)
            if inflate.eof:
                break
    except zlib.error as exc:
        raise _UnreadableError(f"not gzip, or corrupt: {exc}") from None
    except DestinationError as exc:
        raise _UnreadableError(f"download failed: {exc}") from None
    if not inflate.eof:
        raise _UnreadableError("truncated: the gzip stream ends early")
    if rest:
        yield _parsed(rest)


def _parsed(line: bytes) -> dict[str, Any] | BadLine:
    try:
        return _json_event(line)
    except (ValueError, KeyError, TypeError) as exc:
        return BadLine(_reason(exc))


class _ChunkStream(io.RawIOBase):
    """A readable file over downloaded chunks, for fastavro's block-by-block reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _avro_records(chunks: Iterator[bytes], schema: Any) -> Iterator[dict[str, Any] | BadLine]:
    """Each record of an Avro container file, resolved to the current schema."""
    stream = io.BufferedReader(_ChunkStream(chunks), 1024 * 1024)
    try:
        for record in avro_reader(stream, reader_schema=schema):
            yield record if isinstance(record, dict) else BadLine("not an Avro record")
    except (ValueError, EOFError, IndexError, UnicodeDecodeError, zlib.error) as exc:
        raise _UnreadableError(f"not Avro, or truncated: {_reason(exc)}") from None
    except DestinationError as exc:
        raise _UnreadableError(f"download failed: {exc}") from None
