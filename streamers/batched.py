"""Batched objects (``jsonl.gz``, ``avro``): a partition's records gathered into objects named
``TOPIC+PARTITION+FIRSTOFFSET`` and written create-only, with the range they hold as metadata.

Recovery rule. An object's name is fixed by its first offset, and every
object starts right after the previous one ends, so a replay from the last
committed offset targets the same names. Only an idle-timeout close (wall
clock) can make a replay cut a different range under the same name. So when a
create finds the object already there, the streamer reads the last offset
stored in its metadata, takes that object as the truth for its range, commits
after it and seeks the partition to the offset after it: nothing is lost (the
records past the object's end are read again) and nothing is duplicated (the
records it holds are not written again).

Undecodable records are written as dead letters (``layout.dead_letter_key``)
before the object whose range holds them, so a committed range never skips one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from confluent_kafka import Message, TopicPartition

from engine.destinations import BatchSettings, Format
from engine.objects.contract import ObjectStore
from engine.objects.errors import DestinationError
from engine.objects.positions import (
    FIRST_OFFSET,
    GAPS,
    LAST_OFFSET,
    MAX_GAPS,
    RECORDS,
    Gap,
    encode_gaps,
)
from schemas.codec import EventCodec, SchemaMismatchError
from streamers import layout
from streamers.batches import BatchBounds, closes_before, idle_expired, is_full
from streamers.formats import BatchEncoder, batch_encoder, extension
from streamers.per_event import DeadLetterHook, ObjectWrite, dead_letter
from streamers.work import Job, Outcome, Round, TopicPartitionKey, Written


@dataclass(slots=True)
class OpenBatch:
    key: str
    content_type: str
    bounds: BatchBounds
    encoder: BatchEncoder
    dead_letters: list[ObjectWrite] = field(default_factory=list)
    # The offset runs inside the range this object does not hold (transaction markers,
    # aborted records, dead letters): recorded so a reader can place each record.
    gaps: list[Gap] = field(default_factory=list)
    held_next: int = 0  # the offset after the last record held

    def hold(self, offset: int) -> None:
        if offset > self.held_next:
            self.gaps.append((self.held_next - self.bounds.first_offset, offset - self.held_next))
        self.held_next = offset + 1


@dataclass(slots=True)
class SealedBatch:
    """A closed range of one partition: its dead letters, then its object (none if empty)."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    dead_letters: list[ObjectWrite]
    key: str | None = None
    content_type: str = ""
    file: IO[bytes] | None = None
    records: int = 0
    gaps: list[Gap] = field(default_factory=list)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclass(slots=True)
class PartitionBatches:
    open: OpenBatch | None = None
    sealed: deque[SealedBatch] = field(default_factory=deque)

    def close(self) -> None:
        if self.open is not None:
            self.open.encoder.finish().close()
        for batch in self.sealed:
            batch.close()


def upload_job(batch: SealedBatch) -> Job:
    """Write a sealed batch; "exists" is resolved with the recovery rule (module docstring)."""
    tp = (batch.topic, batch.partition)

    def run(store: ObjectStore) -> Outcome:
        outcome = Outcome()
        for write in batch.dead_letters:
            result = store.put_if_absent(write.key, write.body, write.content_type)
            outcome.written.append(Written(write.key, len(write.body), result == "created"))
        after = batch.last_offset + 1
        if batch.file is None or batch.key is None:
            outcome.commit[tp] = after
            return outcome
        metadata = {
            FIRST_OFFSET: str(batch.first_offset),
            LAST_OFFSET: str(batch.last_offset),
            RECORDS: str(batch.records),
            GAPS: encode_gaps(batch.gaps),
        }
        batch.file.seek(0, 2)
        size = batch.file.tell()
        result = store.put_file_if_absent(batch.key, batch.file, batch.content_type, metadata)
        outcome.written.append(Written(batch.key, size, result == "created"))
        if result == "created":
            outcome.commit[tp] = after
            return outcome
        theirs = _last_offset(store, batch.key)
        outcome.commit[tp] = theirs + 1
        if theirs != batch.last_offset:
            outcome.seek[tp] = theirs + 1
        return outcome

    return run


def _last_offset(store: ObjectStore, key: str) -> int:
    value = store.metadata(key).get(LAST_OFFSET, "")
    if not value.isdigit():
        # Not ours, or written by hand: never overwrite it, never skip past it; an
        # operator must look (the failure is reported and retried).
        raise DestinationError(store.name, f"{key} exists without a leadflow last offset")
    return int(value)


class BatchedSink:
    """Gathers each partition's records into objects and hands sealed ones out, one per
    partition per round, so a partition's objects become durable (and commit) in order."""

    # One round at a time: an object found covering another range moves the consumer
    # (a seek), which the next round's batches, cut from the old position, must not outrun.
    rounds_in_flight = 1

    def __init__(
        self,
        codec: EventCodec,
        prefix: str,
        flow_id: str,
        fmt: Format,
        settings: BatchSettings,
        on_dead_letter: DeadLetterHook,
        clock: Callable[[], float],
    ) -> None:
        self._codec = codec
        self._prefix = prefix
        self._flow_id = flow_id
        self._format = fmt
        self._settings = settings
        self._on_dead_letter = on_dead_letter
        self._clock = clock
        self._partitions: dict[TopicPartitionKey, PartitionBatches] = {}

    def add(self, records: list[Message]) -> None:
        for msg in records:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            state = self._partitions.setdefault((topic, partition), PartitionBatches())
            value = msg.value() or b""
            try:
                event = self._codec.decode(value)
                event_time = event["timestamp"]  # a UTC datetime (timestamp-millis)
            except (SchemaMismatchError, KeyError) as exc:
                write = dead_letter(
                    self._prefix, topic, partition, offset, value, f"{type(exc).__name__}: {exc}"
                )
                self._on_dead_letter(topic, partition, offset, write)
                self._add_dead_letter(state, topic, partition, offset, write)
                continue
            if state.open is not None and closes_before(
                state.open.bounds, event_time, self._settings
            ):
                self._seal(state, topic, partition)
            if state.open is None:
                key = layout.batch_key(
                    self._prefix,
                    self._flow_id,
                    event_time,
                    topic,
                    partition,
                    offset,
                    extension(self._format),
                )
                encoder = batch_encoder(self._format, key)
                bounds = BatchBounds(offset, offset, event_time, self._clock())
                state.open = OpenBatch(key, encoder.content_type, bounds, encoder, held_next=offset)
            state.open.encoder.add(event)
            state.open.hold(offset)
            # Bytes are the records' encoded size on the topic: deterministic, cheap,
            # and close to the object's uncompressed size.
            state.open.bounds.add(offset, len(value))
            # Past MAX_GAPS the object closes (deterministic: gaps follow from offsets).
            if is_full(state.open.bounds, self._settings) or len(state.open.gaps) >= MAX_GAPS:
                self._seal(state, topic, partition)

    def _add_dead_letter(
        self, state: PartitionBatches, topic: str, partition: int, offset: int, write: ObjectWrite
    ) -> None:
        if state.open is None:
            state.sealed.append(SealedBatch(topic, partition, offset, offset, [write]))
            return
        state.open.dead_letters.append(write)
        state.open.bounds.add(offset, 0)
        if is_full(state.open.bounds, self._settings):
            self._seal(state, topic, partition)

    def _seal(self, state: PartitionBatches, topic: str, partition: int) -> None:
        batch = state.open
        if batch is None:
            return
        state.open = None
        bounds = batch.bounds
        state.sealed.append(
            SealedBatch(
                topic,
                partition,
                bounds.first_offset,
                bounds.last_offset,
                batch.dead_letters,
                batch.key,
                batch.content_type,
                batch.encoder.finish(),
                bounds.records - len(batch.dead_letters),
                batch.gaps,
            )
        )

    def take_round(self, now: float, active: bool) -> Round | None:
        """The oldest sealed batch of each partition; quiet partitions' batches are sealed
        after ``max_seconds`` open (only while the destination is active)."""
        jobs: list[Job] = []
        done: list[Callable[[], None]] = []
        for (topic, partition), state in self._partitions.items():
            if (
                active
                and state.open is not None
                and not state.sealed
                and idle_expired(state.open.bounds, now, self._settings)
            ):
                self._seal(state, topic, partition)
            if state.sealed:
                batch = state.sealed.popleft()
                jobs.append(upload_job(batch))
                done.append(batch.close)
        return Round(jobs, done=done) if jobs else None

    def pending(self) -> bool:
        return any(s.open is not None or s.sealed for s in self._partitions.values())

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.rewind((tp.topic, tp.partition))

    def rewind(self, tp: TopicPartitionKey) -> None:
        """Drop what is held for ``tp``: it will be read again from the consumer's new position."""
        state = self._partitions.pop(tp, None)
        if state is not None:
            state.close()

    def close(self) -> None:
        for state in self._partitions.values():
            state.close()
        self._partitions.clear()
