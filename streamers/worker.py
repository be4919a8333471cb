"""The streamer loop: consume a flow's events, write them to a destination, commit what is durable.

Delivery: each consumed batch is written in full (concurrently), then its
offsets are committed synchronously. A crash before the commit replays the
batch; the replay hits the same deterministic keys and create-only writes
answer "exists", so every event ends up as exactly one object. A failing
destination is retried with capped exponential backoff forever (lag grows,
nothing is dropped or skipped); each destination has its own consumer group
and thread, so one slow store never holds back another.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from engine.destinations import Destination
from engine.flows import Flow
from engine.runtime.backoff import backoff_delay
from engine.runtime.kafka import consumer_config
from engine.settings import Settings
from schemas.codec import EventCodec, SchemaMismatchError, event_to_json_dict
from streamers import layout
from streamers.destinations import DEFAULT_THREADS, ObjectStore, PutResult, open_store
from streamers.errors import DestinationError

log = structlog.get_logger(__name__)

JSON = "application/json"
BINARY = "application/octet-stream"


def events_pattern(flow_id: str) -> str:
    """The subscription regex for every events topic of a flow (topics added later included)."""
    # Flow ids are slugs ([a-z0-9_-]): nothing in them needs escaping.
    return rf"^leadflow\.{flow_id}\.events\..+$"


def consumer_group_id(flow_id: str, destination: Destination) -> str:
    """One group per destination: ``leadflow.<flow>.streamer.<kind>.<bucket>[.<prefix>]``."""
    parts = ["leadflow", flow_id, "streamer", destination.kind, destination.bucket]
    prefix = layout.normalise_prefix(destination.prefix)
    if prefix:
        parts.append(prefix)
    return ".".join(re.sub(r"[^A-Za-z0-9._-]", "_", part) for part in parts)


@dataclass(frozen=True, slots=True)
class ObjectWrite:
    """One object to create; ``dead_letter_reason`` is set when the record was undecodable."""

    key: str
    body: bytes
    content_type: str
    dead_letter_reason: str | None = None


def object_for_record(
    codec: EventCodec, prefix: str, topic: str, partition: int, offset: int, value: bytes | None
) -> ObjectWrite:
    """The object one Kafka record becomes: the event's JSON, or the raw bytes as a dead letter.

    A bad record is data, not an exception: it is kept (once, at a key named
    by its position) and the stream moves on.
    """
    try:
        event = codec.decode(value or b"")
        key = layout.event_key(prefix, event["lead_id"], event["id"])
        return ObjectWrite(key, orjson.dumps(event_to_json_dict(event)), JSON)
    except (SchemaMismatchError, ValueError, TypeError, KeyError) as exc:
        # orjson.JSONEncodeError is a TypeError; layout refuses ids as ValueError.
        key = layout.dead_letter_key(prefix, topic, partition, offset)
        return ObjectWrite(key, value or b"", BINARY, f"{type(exc).__name__}: {exc}")


def next_offsets(messages: Iterable[Message]) -> dict[tuple[str, int], int]:
    """Per partition, the offset to commit after these messages: the last one + 1."""
    out: dict[tuple[str, int], int] = {}
    for msg in messages:
        tp = (msg.topic() or "", msg.partition() or 0)
        out[tp] = max(out.get(tp, 0), (msg.offset() or 0) + 1)
    return out


@dataclass(slots=True)
class StreamerStats:
    created: int = 0
    existed: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    batches_committed: int = 0


class Streamer:
    """Streams one flow's events to one destination, under its own consumer group."""

    def __init__(
        self,
        settings: Settings,
        flow: Flow,
        destination: Destination,
        *,
        store: ObjectStore | None = None,
        threads: int = DEFAULT_THREADS,
        batch_size: int | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.flow = flow
        self.destination = destination
        self.group_id = consumer_group_id(flow.id, destination)
        self.threads = threads
        self.batch_size = batch_size or settings.batch_size
        self.stats = StreamerStats()
        self._store = store
        self._overrides = dict(consumer_overrides or {})
        self._codec = EventCodec()
        # Offsets of durable batches whose commit failed; retried with the next commit.
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._log = log.bind(destination=destination.name, group=self.group_id)

    def run(self, stop: threading.Event) -> None:
        """Stream until ``stop`` is set. A batch interrupted by ``stop`` is not committed."""
        store = self._store or open_store(self.destination, self.settings, threads=self.threads)
        consumer = Consumer(consumer_config(self.settings, self.group_id, **self._overrides))
        consumer.subscribe(
            [events_pattern(self.flow.id)], on_revoke=self._forget, on_lost=self._forget
        )
        self._log.info("streamer started", threads=self.threads, batch_size=self.batch_size)
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="put") as pool:
                while not stop.is_set():
                    records = self._consume(consumer)
                    if not records:
                        continue
                    writes = self._plan(records)
                    if not self._write_all(pool, store, writes, stop):
                        self._log.info("stopped mid-batch, not committing", objects=len(writes))
                        break
                    self._commit(consumer, next_offsets(records))
        finally:
            consumer.close()
            if self._store is None:
                store.close()
            self._log.info("streamer stopped", **self._stats_dict())

    def _consume(self, consumer: Consumer) -> list[Message]:
        records = []
        for msg in consumer.consume(num_messages=self.batch_size, timeout=0.5):
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                self._log.warning("consume error", error=str(err))
        return records

    def _plan(self, records: list[Message]) -> list[ObjectWrite]:
        writes: dict[str, ObjectWrite] = {}
        prefix = self.destination.prefix
        for msg in records:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            write = object_for_record(self._codec, prefix, topic, partition, offset, msg.value())
            if write.dead_letter_reason is not None:
                self.stats.dead_lettered += 1
                self._log.warning(
                    "undecodable record, dead-lettered",
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    key=write.key,
                    reason=write.dead_letter_reason,
                )
            # A key seen twice in one batch is one object: write it once.
            writes.setdefault(write.key, write)
        return list(writes.values())

    def _write_all(
        self,
        pool: ThreadPoolExecutor,
        store: ObjectStore,
        writes: list[ObjectWrite],
        stop: threading.Event,
    ) -> bool:
        """Write every object, retrying the failed ones until all are durable.
        False if ``stop`` came first."""

        def put(write: ObjectWrite) -> PutResult | DestinationError | None:
            if stop.is_set():
                return None  # shutting down: do not start new writes
            try:
                return store.put_if_absent(write.key, write.body, write.content_type)
            except DestinationError as exc:
                return exc

        pending, attempt = writes, 0
        while True:
            results = list(pool.map(put, pending))
            self.stats.created += results.count("created")
            self.stats.existed += results.count("exists")
            if None in results:
                return False
            outcomes = zip(pending, results, strict=True)
            failed = [(w, r) for w, r in outcomes if isinstance(r, DestinationError)]
            if not failed:
                return True
            attempt += 1
            self.stats.failed_attempts += len(failed)
            delay = backoff_delay(attempt)
            self._log.warning(
                "writes failed, retrying",
                failed=len(failed),
                of=len(pending),
                attempt=attempt,
                retry_in_s=round(delay, 2),
                error=str(failed[0][1]),
            )
            if stop.wait(delay):
                return False
            pending = [w for w, _ in failed]

    def _commit(self, consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
        for tp, offset in offsets.items():
            self._uncommitted[tp] = max(self._uncommitted.get(tp, 0), offset)
        partitions = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
        try:
            consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            # The objects are durable; a failed commit only means a replay that
            # finds them already there. Kept and retried with the next batch.
            self._log.warning("offset commit failed", error=str(exc.args[0]))
            return
        self._uncommitted.clear()
        self.stats.batches_committed += 1

    def _forget(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        # Partitions moving to another member: their new owner resumes from the
        # last commit, so our uncommitted offsets must not overwrite its progress.
        for tp in partitions:
            self._uncommitted.pop((tp.topic, tp.partition), None)

    def _stats_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self.stats)


def run_streamers(
    settings: Settings,
    flow: Flow,
    stop: threading.Event,
    *,
    threads: int = DEFAULT_THREADS,
    consumer_overrides: Mapping[str, Any] | None = None,
) -> list[Streamer]:
    """Stream ``flow``'s events to each enabled destination, one thread each, until ``stop``.

    Write failures are retried inside each streamer and never end it; an
    unexpected error (a bug, a fatal Kafka error) stops all streamers and is
    re-raised, so the process exits and its supervisor restarts it. Returns
    the streamers (for their stats) once all have stopped.
    """
    streamers = [
        Streamer(settings, flow, d, threads=threads, consumer_overrides=consumer_overrides)
        for d in flow.destinations
        if d.enabled
    ]
    if not streamers:
        log.info("no enabled destinations", flow=flow.id)
        return []
    halt = threading.Event()
    errors: list[Exception] = []

    def guard(streamer: Streamer) -> None:
        try:
            streamer.run(halt)
        except Exception as exc:
            log.exception("streamer crashed", destination=streamer.destination.name)
            errors.append(exc)
            halt.set()

    workers = [
        threading.Thread(target=guard, args=(s,), name=f"streamer-{s.destination.kind}")
        for s in streamers
    ]
    for worker in workers:
        worker.start()
    while not halt.is_set():
        if stop.wait(0.2):
            halt.set()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return streamers
