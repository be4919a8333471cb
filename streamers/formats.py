"""How events become object bytes: one JSON document per event, or a batch as JSON Lines
(gzip) or an Avro object container file.

Batched encodings are deterministic — the gzip header carries no time or file
name, the Avro sync marker is derived from the object's key and no wall-clock
metadata is written — so a retry of the same records produces the same bytes.
Batches are spooled: up to ``SPOOL_MEMORY_BYTES`` in memory, the rest in a
temporary file, so an open batch of any size costs bounded memory.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
from typing import IO, Any, Protocol

import orjson
from fastavro.write import Writer

from engine.destinations import Format
from schemas.codec import default_codec, event_to_json_dict

JSON_CONTENT_TYPE = "application/json"
JSONL_GZ_CONTENT_TYPE = "application/gzip"
AVRO_CONTENT_TYPE = "application/avro"
SPOOL_MEMORY_BYTES = 1024 * 1024
# Avro blocks are cut at this many bytes and deflated one by one (fastavro's default).
_AVRO_SYNC_INTERVAL = 16_000


def event_json(event: dict[str, Any]) -> bytes:
    """One decoded event as the JSON document consumers read (LeadConduit's shape)."""
    return orjson.dumps(event_to_json_dict(event))


def avro_sync_marker(key: str) -> bytes:
    """The 16-byte sync marker of the Avro file at ``key``: fixed by the name, not random,
    so two attempts at the same object write identical bytes."""
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


class BatchEncoder(Protocol):
    """Accumulates events into one object's bytes."""

    extension: str
    content_type: str

    def add(self, event: dict[str, Any]) -> None: ...

    def finish(self) -> IO[bytes]:
        """The complete object, positioned at its start; the encoder takes no more events."""
        ...


def _spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)


class JsonLinesGzipEncoder:
    """One event's JSON per line, gzip-compressed as one member."""

    extension = "jsonl.gz"
    content_type = JSONL_GZ_CONTENT_TYPE

    def __init__(self) -> None:
        self._file = _spool()
        # mtime=0 and no file name: the gzip header is the same on every attempt.
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0)

    def add(self, event: dict[str, Any]) -> None:
        self._gzip.write(event_json(event) + b"\n")

    def finish(self) -> IO[bytes]:
        self._gzip.close()
        self._file.seek(0)
        return self._file


class AvroContainerEncoder:
    """An Avro object container file of lead events (``schemas/lead_event.avsc``), deflated."""

    extension = "avro"
    content_type = AVRO_CONTENT_TYPE

    def __init__(self, key: str) -> None:
        self._file = _spool()
        self._writer = Writer(
            self._file,
            default_codec().schema,
            codec="deflate",
            sync_interval=_AVRO_SYNC_INTERVAL,
            sync_marker=avro_sync_marker(key),
        )

    def add(self, event: dict[str, Any]) -> None:
        self._writer.write(event)

    def finish(self) -> IO[bytes]:
        self._writer.flush()
        self._file.seek(0)
        return self._file


def extension(fmt: Format) -> str:
    return {"json": "json", "jsonl.gz": "jsonl.gz", "avro": "avro"}[fmt]


def batch_encoder(fmt: Format, key: str) -> BatchEncoder:
    """The encoder of a batched object at ``key`` (its name seeds the Avro sync marker)."""
    if fmt == "jsonl.gz":
        return JsonLinesGzipEncoder()
    if fmt == "avro":
        return AvroContainerEncoder(key)
    raise ValueError(f"format {fmt} is not batched")
