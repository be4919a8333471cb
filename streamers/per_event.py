"""Per-event objects (``format: json``): each record becomes one JSON object or a dead letter.

Keys come from the event (``lead`` or ``time`` layout), so a replayed record
targets the same key and the create-only write answers "exists".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

from engine.destinations import Layout
from engine.objects.contract import ObjectStore, PutResult
from engine.objects.positions import event_metadata
from schemas.codec import EventCodec, SchemaMismatchError
from streamers import layout
from streamers.formats import JSON_CONTENT_TYPE, event_json
from streamers.work import Job, Outcome, Round, TopicPartitionKey, Written

JSON = JSON_CONTENT_TYPE
BINARY = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ObjectWrite:
    """One object to create; ``dead_letter_reason`` is set when the record was undecodable.
    ``metadata`` records an event's Kafka position (``engine.objects.positions``)."""

    key: str
    body: bytes
    content_type: str
    dead_letter_reason: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


# Told of each undecodable record: (topic, partition, offset, its dead-letter object).
DeadLetterHook = Callable[[str, int, int, "ObjectWrite"], None]


def dead_letter(
    prefix: str, topic: str, partition: int, offset: int, value: bytes | None, reason: str
) -> ObjectWrite:
    """An undecodable record kept as is, once, at a key named by its position."""
    key = layout.dead_letter_key(prefix, topic, partition, offset)
    return ObjectWrite(key, value or b"", BINARY, reason)


def object_for_record(
    codec: EventCodec,
    prefix: str,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    *,
    key_layout: Layout = "lead",
) -> ObjectWrite:
    """The object one Kafka record becomes: the event's JSON, or the raw bytes as a dead letter.

    A bad record is data, not an exception: it is kept and the stream moves on.
    """
    try:
        event = codec.decode(value or b"")
        if key_layout == "time":
            key = layout.time_event_key(
                prefix, event["flow_id"], event["timestamp"], event["lead_id"], event["id"]
            )
        else:
            key = layout.event_key(prefix, event["lead_id"], event["id"])
        position = event_metadata(topic, partition, offset)
        return ObjectWrite(key, event_json(event), JSON, metadata=position)
    except (SchemaMismatchError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # orjson.JSONEncodeError is a TypeError; layout refuses ids as ValueError.
        reason = f"{type(exc).__name__}: {exc}"
        return dead_letter(prefix, topic, partition, offset, value, reason)


def next_offsets(messages: Iterable[Message]) -> dict[TopicPartitionKey, int]:
    """Per partition, the offset to commit after these messages: the last one + 1."""
    out: dict[TopicPartitionKey, int] = {}
    for msg in messages:
        tp = (msg.topic() or "", msg.partition() or 0)
        out[tp] = max(out.get(tp, 0), (msg.offset() or 0) + 1)
    return out


def put_object(store: ObjectStore, write: ObjectWrite) -> PutResult:
    """Create ``write``'s object, with its metadata when it has any: one PUT of its bytes."""
    return store.put_if_absent(write.key, write.body, write.content_type, write.metadata or None)


def put_job(write: ObjectWrite) -> Job:
    def run(store: ObjectStore) -> Outcome:
        result = put_object(store, write)
        return Outcome(written=[Written(write.key, len(write.body), result == "created")])

    return run


class PerEventSink:
    """Turns each consumed chunk into one round: an object per event, committed together."""

    # Rounds are independent (an object per event, keys of their own): several may be
    # under way at once, the next one's PUTs overlapping the last one's slowest.
    rounds_in_flight = 8

    def __init__(
        self, codec: EventCodec, prefix: str, key_layout: Layout, on_dead_letter: DeadLetterHook
    ) -> None:
        self._codec = codec
        self._prefix = prefix
        self._layout = key_layout
        self._on_dead_letter = on_dead_letter
        self._records: list[Message] = []

    def add(self, records: list[Message]) -> None:
        self._records.extend(records)

    def take_round(self, now: float, active: bool) -> Round | None:
        if not self._records:
            return None
        records, self._records = self._records, []
        writes: dict[str, ObjectWrite] = {}
        for msg in records:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            write = object_for_record(
                self._codec,
                self._prefix,
                topic,
                partition,
                offset,
                msg.value(),
                key_layout=self._layout,
            )
            if write.dead_letter_reason is not None:
                self._on_dead_letter(topic, partition, offset, write)
            # A key seen twice in one chunk is one object: write it once.
            writes.setdefault(write.key, write)
        return Round([put_job(w) for w in writes.values()], commit=next_offsets(records))

    def forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._records = [
            m for m in self._records if (m.topic() or "", m.partition() or 0) not in gone
        ]

    def rewind(self, tp: TopicPartitionKey) -> None:
        """Nothing is held across rounds."""

    def close(self) -> None:
        """Nothing to release."""
