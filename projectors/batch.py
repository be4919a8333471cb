"""Kafka records to projection rows: events, rejects and next offsets, with no I/O.

A record that is not a storable leadflow event is data, not an exception: it
becomes a ``Reject`` that is written next to the events, and the batch goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from schemas.codec import EventCodec, SchemaMismatchError, event_to_json_dict

# Column name and Postgres type of each value of an event row, in row order, as
# staged for COPY. Integers travel as int8 even where the table has integer:
# psycopg's binary int4 dumper silently wraps a value that does not fit, int8
# refuses it; ``event_row`` checks the ranges so the insert never fails on one.
# ``snapshot`` travels as UTF-8 JSON bytes (bytea) and becomes jsonb on insert.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("lead_id", "text"),
    ("flow_id", "text"),
    ("flow_version", "int8"),
    ("step_id", "text"),
    ("step_name", "text"),
    ("entity_id", "text"),
    ("type", "text"),
    ("outcome", "text"),
    ("reason", "text"),
    ("ts", "timestamptz"),
    ("start_timestamp", "int8"),
    ("end_timestamp", "int8"),
    ("ms", "int8"),
    ("wait_ms", "int8"),
    ("overhead_ms", "int8"),
    ("lag_ms", "int8"),
    ("total_ms", "int8"),
    ("step_count", "int8"),
    ("cost", "float8"),
    ("revenue", "float8"),
    ("host", "text"),
    ("handler_version", "text"),
    ("version", "text"),
    ("expires_at", "timestamptz"),
    ("snapshot", "bytea"),
    ("kafka_topic", "text"),
    ("kafka_partition", "int8"),
    ("kafka_offset", "int8"),
)

# Event fields whose table column is integer (the rest of the ints are bigint).
_INT4_FIELDS = ("flow_version", "ms", "wait_ms", "overhead_ms", "step_count")
_INT8_FIELDS = ("start_timestamp", "end_timestamp", "lag_ms", "total_ms")
_INT4_MAX, _INT8_MAX = 2**31, 2**63

# Event fields copied as they are, in EVENT_COLUMNS order ("ts" is "timestamp").
_FIELDS = (
    "id", "lead_id", "flow_id", "flow_version", "step_id", "step_name", "entity_id", "type",
    "outcome", "reason", "timestamp", "start_timestamp", "end_timestamp", "ms", "wait_ms",
    "overhead_ms", "lag_ms", "total_ms", "step_count", "cost", "revenue", "host",
    "handler_version", "version", "expires_at",
)  # fmt: skip
_copied_fields = itemgetter(*_FIELDS)

EventRow = tuple[Any, ...]


class UnstorableEventError(ValueError):
    """A decodable event Postgres cannot store as it is."""


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, as much of it as the projection needs."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """A record kept aside, with why it could not be projected."""

    record: Record
    error: str


@dataclass(slots=True)
class Batch:
    """What one Postgres transaction writes: rows, rejects and where each partition resumes."""

    events: list[EventRow] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return len(self.events) + len(self.rejects)


def event_row(event: dict[str, Any], record: Record) -> EventRow:
    """The row of one decoded event, in ``EVENT_COLUMNS`` order."""
    # Avro varints decode to any size whatever the schema says: check what
    # Postgres would refuse, so that one bad event cannot fail its batch forever.
    for names, bound in ((_INT4_FIELDS, _INT4_MAX), (_INT8_FIELDS, _INT8_MAX)):
        for name in names:
            if not -bound <= event[name] < bound:
                raise UnstorableEventError(f"{name}={event[name]} is out of range for Postgres")
    snapshot = orjson.dumps(event_to_json_dict(event))
    # Postgres text and jsonb cannot hold NUL (orjson writes it as \u0000). A lead can
    # carry one (a web form's garbage, an attacker's probe): the projection shows it as
    # U+FFFD rather than lose the event; the topics and the stored objects keep it.
    if b"\\u0000" in snapshot:
        event = _without_nul(event)
        snapshot = orjson.dumps(event_to_json_dict(event))
    return (
        *_copied_fields(event),
        snapshot,
        record.topic,
        record.partition,
        record.offset,
    )


NUL_STAND_IN = "\ufffd"


def _without_nul(value: Any) -> Any:
    """``value`` with every NUL in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_STAND_IN)
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def build_batch(codec: EventCodec, records: Iterable[Record]) -> Batch:
    """Decode every record; the offset after the last one of each partition is its checkpoint."""
    batch = Batch()
    for record in records:
        try:
            batch.events.append(event_row(codec.decode(record.value or b""), record))
        # OverflowError and TypeError: a decodable body whose timestamps or
        # types do not fit Python values; KeyError: an event missing a field.
        except (SchemaMismatchError, ValueError, OverflowError, TypeError, KeyError) as exc:
            batch.rejects.append(Reject(record, f"{type(exc).__name__}: {exc}"))
        tp = (record.topic, record.partition)
        batch.next_offsets[tp] = max(batch.next_offsets.get(tp, 0), record.offset + 1)
    return batch
