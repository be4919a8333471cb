"""Where an archived event sat in Kafka: what the streamer records with each object, and how
a reader (``leadflow replay --from-archive``) reads it back from keys and metadata.

A rebuild from the archive must give every event the topic, partition and offset a
rebuild from the topics gives it, and must hand over to the topics at the offset right
after the last archived one. Keys alone do not say that: a per-event object is named by
lead and event id, and a batched object's records are not contiguous offsets (transaction
markers, aborted records and dead letters sit between them). So the streamer records:

* per-event objects: ``leadflow_topic``, ``leadflow_partition``, ``leadflow_offset``;
* batched objects: first and last offset, record count, and the *gaps* - the offset runs
  inside the range the object does not hold - as ``start:length`` pairs relative to the
  first offset (``"3:1,17:2"``). An object closes once it holds ``MAX_GAPS`` gaps, so the
  metadata stays well under S3's 2 KiB.

Pure functions only: no store, no Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from engine.objects.contract import directory

FIRST_OFFSET = "leadflow_first_offset"
LAST_OFFSET = "leadflow_last_offset"
RECORDS = "leadflow_records"
GAPS = "leadflow_gaps"
TOPIC = "leadflow_topic"
PARTITION = "leadflow_partition"
OFFSET = "leadflow_offset"

# Each gap costs at most ~12 characters of metadata: 64 of them stay far below S3's limit.
MAX_GAPS = 64

Gap = tuple[int, int]  # (start relative to the object's first offset, length)
ArchiveFormat = Literal["json", "jsonl.gz", "avro"]

_BATCH_NAME = re.compile(
    r"^(?P<topic>[^/+]+)\+(?P<partition>\d+)\+(?P<first>\d{19})\.(?P<ext>jsonl\.gz|avro)$"
)
_HOUR_DIR = re.compile(r"(?:^|/)dt=(?P<day>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/")
# Directories the streamer writes beside events (dead letters, verification probes).
_NOT_EVENTS = ("_dead_letter/", "leadflow_verification_")


class PositionError(ValueError):
    """An object's recorded Kafka position is missing or does not add up."""


@dataclass(frozen=True, slots=True)
class ArchiveKey:
    """One archived object as its key describes it."""

    key: str
    format: ArchiveFormat
    hour: datetime | None  # the event-time hour of its directory; None in the lead layout
    topic: str | None = None  # batched objects only
    partition: int | None = None
    first_offset: int | None = None

    @property
    def batched(self) -> bool:
        return self.format != "json"

    def order(self) -> tuple[datetime, str, int, int, str]:
        """Time order: event-time hour, then a partition's objects by offset, then key."""
        return (
            self.hour or datetime.min.replace(tzinfo=UTC),
            self.topic or "",
            self.partition if self.partition is not None else -1,
            self.first_offset if self.first_offset is not None else -1,
            self.key,
        )


def parse_archive_key(prefix: str, key: str) -> ArchiveKey | None:
    """What the object at ``key`` holds by its name; ``None`` for what is not an event object
    (dead letters, verification probes, anything of another name)."""
    root = directory(prefix)
    if not key.startswith(root):
        return None
    name = key[len(root) :]
    if name.startswith(_NOT_EVENTS):
        return None
    hour_match = _HOUR_DIR.search(name)
    hour = (
        datetime.strptime(f"{hour_match['day']} {hour_match['hour']}", "%Y-%m-%d %H").replace(
            tzinfo=UTC
        )
        if hour_match
        else None
    )
    base = name.rsplit("/", 1)[-1]
    batch = _BATCH_NAME.match(base)
    if batch is not None:
        fmt: ArchiveFormat = "avro" if batch["ext"] == "avro" else "jsonl.gz"
        return ArchiveKey(
            key, fmt, hour, batch["topic"], int(batch["partition"]), int(batch["first"])
        )
    if base.endswith(".json") and "/" in name:
        return ArchiveKey(key, "json", hour)
    return None


def up_to(objects: list[ArchiveKey], to_time: datetime | None) -> list[ArchiveKey]:
    """The objects a replay ``--to to_time`` reads, in time order; the topics hold the rest.

    A batched object of a later hour ends its partition's run: no object of that partition
    at a later offset is read, so the hand-over (the offset after the last archived record)
    never passes over records left unread. Per-event objects are taken by their hour
    directory; those of the lead layout (no hour in their key) are always read.
    """
    ordered = sorted(objects, key=ArchiveKey.order)
    if to_time is None:
        return ordered
    to_hour = to_time.astimezone(UTC)
    cut: dict[tuple[str, int], int] = {}
    for a in ordered:
        if a.batched and a.hour is not None and a.hour > to_hour:
            tp = (a.topic or "", a.partition or 0)
            cut[tp] = min(cut.get(tp, a.first_offset or 0), a.first_offset or 0)
    kept = []
    for a in ordered:
        if a.batched:
            tp = (a.topic or "", a.partition or 0)
            if tp in cut and (a.first_offset or 0) >= cut[tp]:
                continue
        elif a.hour is not None and a.hour > to_hour:
            continue
        kept.append(a)
    return kept


# -- batched objects: gaps ----------------------------------------------------------------


def encode_gaps(gaps: list[Gap]) -> str:
    return ",".join(f"{start}:{length}" for start, length in gaps)


def decode_gaps(text: str) -> list[Gap]:
    if not text:
        return []
    gaps = []
    for part in text.split(","):
        start, sep, length = part.partition(":")
        if not sep or not start.isdigit() or not length.isdigit() or int(length) < 1:
            raise PositionError(f"{GAPS} {text!r} is not start:length pairs")
        gaps.append((int(start), int(length)))
    return gaps


@dataclass(frozen=True, slots=True)
class BatchPositions:
    """The offsets of a batched object's records, in the order they are stored."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    records: int
    gaps: tuple[Gap, ...]

    def offsets(self) -> Iterator[int]:
        """Each record's offset: the range from the first, skipping the gaps."""
        gaps = iter(self.gaps)
        gap = next(gaps, None)
        relative = 0
        for _ in range(self.records):
            while gap is not None and relative == gap[0]:
                relative += gap[1]
                gap = next(gaps, None)
            yield self.first_offset + relative
            relative += 1


def batch_positions(archived: ArchiveKey, metadata: Mapping[str, str]) -> BatchPositions:
    """A batched object's positions from its key and metadata; ``PositionError`` when they are
    missing or do not add up (then its records' offsets cannot be known)."""
    assert archived.topic is not None and archived.partition is not None  # batched keys have them
    values = {name: metadata.get(name, "") for name in (FIRST_OFFSET, LAST_OFFSET, RECORDS)}
    if not all(v.isdigit() for v in values.values()):
        raise PositionError(f"no Kafka range recorded ({FIRST_OFFSET}, {LAST_OFFSET}, {RECORDS})")
    first, last, records = (int(values[n]) for n in (FIRST_OFFSET, LAST_OFFSET, RECORDS))
    if first != archived.first_offset:
        raise PositionError(f"{FIRST_OFFSET}={first} but the key says {archived.first_offset}")
    gaps = tuple(decode_gaps(metadata.get(GAPS, "")))
    span = last - first + 1
    if GAPS not in metadata and records != span:
        # Written before gaps were recorded: only a contiguous range can be placed.
        raise PositionError(f"{records} records in {span} offsets and no {GAPS} recorded")
    held = span - sum(length for _, length in gaps)
    if records > held or any(start + length > span for start, length in gaps):
        raise PositionError(f"{records} records do not fit offsets {first}-{last} less {GAPS}")
    return BatchPositions(archived.topic, archived.partition, first, last, records, gaps)


# -- per-event objects ---------------------------------------------------------------------


def event_metadata(topic: str, partition: int, offset: int) -> dict[str, str]:
    """What a per-event object records of its Kafka record."""
    return {TOPIC: topic, PARTITION: str(partition), OFFSET: str(offset)}


def event_position(metadata: Mapping[str, str]) -> tuple[str, int, int]:
    """(topic, partition, offset) of a per-event object; ``PositionError`` if not recorded."""
    topic = metadata.get(TOPIC, "")
    partition, offset = metadata.get(PARTITION, ""), metadata.get(OFFSET, "")
    if not topic or not partition.isdigit() or not offset.isdigit():
        raise PositionError(f"no Kafka position recorded ({TOPIC}, {PARTITION}, {OFFSET})")
    return topic, int(partition), int(offset)
