"""Backfill: write a time range of a flow's existing events to one destination, from the topics.

Each partition is read from its first record at or after ``start`` (Kafka's
time index) up to its first record at or after ``end`` (or its end), and only
records whose timestamp is in ``[start, end)`` are written, so the range is
exact even where producer timestamps are out of order. Objects get the same
deterministic keys the streamer gives them and are written create-only, so a
backfill overlapping what the streamer wrote, or run twice, or interrupted and
run again, leaves every event exactly once. Nothing is committed: a backfill
never moves the destination's consumer group.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from engine.destinations import Destination
from engine.errors import LeadflowError
from engine.flows import Flow
from engine.objects.contract import DEFAULT_THREADS, ObjectStore
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError
from engine.runtime.backoff import backoff_delay
from engine.runtime.kafka.clients import new_admin, new_consumer
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.settings import Settings
from schemas.codec import EventCodec
from streamers.per_event import ObjectWrite, object_for_record, put_object
from streamers.topic_offsets import TopicPart, ends, flow_partitions, offsets_at

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]  # (offsets behind us, offsets in the range)
_ATTEMPTS = 8  # per write, with backoff: an outage longer than ~1 min ends the backfill


class BackfillError(LeadflowError):
    """A backfill cannot run for this destination, or its writes kept failing."""


@dataclass(slots=True)
class BackfillResult:
    read: int = 0  # records read within the partitions' offset ranges
    in_range: int = 0  # of them, with a timestamp in [start, end)
    created: int = 0
    existed: int = 0
    dead_lettered: int = 0
    ranges: dict[TopicPart, tuple[int, int]] = field(default_factory=dict)


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("backfill times must be timezone-aware")
    return int(when.timestamp() * 1000)


def check_backfillable(destination: Destination) -> None:
    """Per-event objects (either layout) only, for now: a batched object's name and
    content depend on where its batch started, which the streaming loop's batcher
    decides; a backfill writing its own batches would duplicate events under other names."""
    if destination.batched:
        raise BackfillError(
            f"backfill of format {destination.format} is not supported yet: only per-event "
            "objects (format json) can be backfilled"
        )


def plan_ranges(
    settings: Settings, flow: Flow, start: datetime, end: datetime | None
) -> dict[TopicPart, tuple[int, int]]:
    """Per partition with records in the range: [first offset, stop offset)."""
    admin = new_admin(settings)
    parts = flow_partitions(admin, flow.id)
    first = offsets_at(admin, parts, _ms(start))
    stop = ends(admin, parts) if end is None else offsets_at(admin, parts, _ms(end))
    return {tp: (first[tp], stop[tp]) for tp in parts if stop[tp] > first[tp]}


def backfill(
    settings: Settings,
    flow: Flow,
    destination: Destination,
    start: datetime,
    end: datetime | None = None,
    *,
    store: ObjectStore | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    threads: int = DEFAULT_THREADS,
    batch_size: int = 500,
) -> BackfillResult:
    """Write the flow's events recorded in ``[start, end)`` (``end``: now) to ``destination``."""
    check_backfillable(destination)
    stop = stop or threading.Event()
    result = BackfillResult(ranges=plan_ranges(settings, flow, start, end))
    total = sum(b - a for a, b in result.ranges.values())
    if progress is not None:
        progress(0, total)
    if not result.ranges:
        return result
    start_ms, end_ms = _ms(start), (_ms(end) if end is not None else None)
    own_store = store is None
    target = store or open_store(destination, settings, threads=threads)
    # A group id is required but never used: assign() without commits joins no group.
    group = f"leadflow.{flow.id}.backfill.{uuid.uuid4().hex[:8]}"
    consumer = new_consumer(settings, group, **{"enable.partition.eof": True})
    errors = ConsumeErrors(group)
    codec = EventCodec()
    remaining = dict(result.ranges)
    reached = {tp: first for tp, (first, _) in result.ranges.items()}  # next offset to read
    try:
        consumer.assign([TopicPartition(t, p, a) for (t, p), (a, _) in remaining.items()])
        with ThreadPoolExecutor(threads, thread_name_prefix="backfill") as pool:
            while remaining and not stop.is_set():
                batch = _consume(consumer, remaining, batch_size, errors)
                writes: dict[str, ObjectWrite] = {}
                for msg in batch:
                    topic, part, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                    reached[(topic, part)] = offset + 1
                    result.read += 1
                    _, ms = msg.timestamp()
                    if ms < start_ms or (end_ms is not None and ms >= end_ms):
                        continue
                    result.in_range += 1
                    write = object_for_record(
                        codec, destination.prefix, topic, part, offset, msg.value(),
                        key_layout=destination.effective_layout,
                    )  # fmt: skip
                    result.dead_lettered += write.dead_letter_reason is not None
                    writes.setdefault(write.key, write)
                _write_all(pool, target, list(writes.values()), result, stop)
                if progress is not None:
                    progress(_offsets_done(result.ranges, remaining, reached), total)
    finally:
        consumer.close()
        if own_store:
            target.close()
    if stop.is_set():
        raise BackfillError(
            "backfill interrupted; running it again resumes (writes are create-only)"
        )
    return result


def _offsets_done(
    ranges: dict[TopicPart, tuple[int, int]],
    remaining: dict[TopicPart, tuple[int, int]],
    reached: dict[TopicPart, int],
) -> int:
    """Offsets behind the backfill, in the unit of its total: a finished partition's whole
    range, an unfinished one's up to the last record read. Transaction markers take offsets
    too, so counting records read left the bar short of its total when done (126/145)."""
    return sum(
        (stop if tp not in remaining else reached[tp]) - first
        for tp, (first, stop) in ranges.items()
    )


def _consume(
    consumer: Consumer,
    remaining: dict[TopicPart, tuple[int, int]],
    batch_size: int,
    errors: ConsumeErrors,
) -> list[Message]:
    """The next records inside the ranges; a partition read to its stop leaves ``remaining``."""
    ended: set[TopicPart] = set()
    out = []

    def at_end(topic: str, partition: int, _: int) -> None:
        ended.add((topic, partition))

    for msg in fetch(consumer, batch_size, 0.5, errors, at_end, fill=True):
        tp = (msg.topic() or "", msg.partition() or 0)
        if tp not in remaining:
            continue
        offset = msg.offset() or 0
        _, stop_at = remaining[tp]
        if offset >= stop_at:
            _finish(consumer, remaining, tp)
            continue
        out.append(msg)
        # Transaction markers occupy offsets too: the last record may sit below stop - 1.
        if offset + 1 >= stop_at:
            _finish(consumer, remaining, tp)
    for tp in ended:
        # Read to the end: nothing more in range (an end is reported before the batch's
        # records, so only now, once they are taken).
        _finish(consumer, remaining, tp)
    for tp in list(remaining):
        # A partition whose range ends with transaction markers delivers no record at
        # its stop: its position (past the markers) says it is done.
        position = consumer.position([TopicPartition(*tp)])[0].offset
        if position >= remaining[tp][1]:
            _finish(consumer, remaining, tp)
    return out


def _finish(consumer: Consumer, remaining: dict[TopicPart, tuple[int, int]], tp: TopicPart) -> None:
    if remaining.pop(tp, None) is not None:
        consumer.pause([TopicPartition(*tp)])


def _write_all(
    pool: ThreadPoolExecutor,
    store: ObjectStore,
    writes: list[ObjectWrite],
    result: BackfillResult,
    stop: threading.Event,
) -> None:
    def put(write: ObjectWrite) -> str | DestinationError:
        try:
            return put_object(store, write)
        except DestinationError as exc:
            return exc

    pending = writes
    for attempt in range(1, _ATTEMPTS + 1):
        outcomes = list(pool.map(put, pending))
        result.created += outcomes.count("created")
        result.existed += outcomes.count("exists")
        failed = [
            w for w, o in zip(pending, outcomes, strict=True) if isinstance(o, DestinationError)
        ]
        if not failed:
            return
        errors = [o for o in outcomes if isinstance(o, DestinationError)]
        if attempt == _ATTEMPTS:
            raise BackfillError(f"{len(failed)} writes kept failing: {errors[0]}")
        log.warning("backfill writes failed, retrying", failed=len(failed), error=str(errors[0]))
        if stop.wait(backoff_delay(attempt)):
            return
        pending = failed
