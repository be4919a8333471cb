"""The streamer loop: consume a flow's events, hand them to a sink, write what it hands back,
commit what is durable.

Delivery: a sink (``per_event`` or ``batched``) turns records into rounds of
idempotent jobs (create-only writes under deterministic keys). A round's jobs
run concurrently; failed ones are retried with capped exponential backoff and
jitter, forever (lag grows, nothing is dropped or skipped); only once the whole
round is durable are its offsets committed. A crash before the commit replays
the records, and the replay finds the objects already there.

Overlap: a sink whose rounds are independent (``per_event``) has several under way
at once (``streamers.flights``): the next round's PUTs start while the last one's
slowest finish and while the loop fetches and commits, so the writer threads keep
the store as busy as a bare PUT loop of the same width would. Rounds still commit
in the order they were read, each once it and every round before it are durable.

Back-pressure: while a round is slow or failing, and while the observer says
the destination is inactive, every assigned partition is paused and the
consumer keeps polling: it stays in its group past ``max.poll.interval.ms``,
fetches nothing (memory stays bounded) and keeps its position. Each
destination has its own consumer group and thread, so one failing store never
holds back another.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.contract import DEFAULT_THREADS, ObjectStore, normalise_prefix
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError
from engine.runtime.backoff import backoff_delay
from engine.runtime.kafka.clients import new_pattern_consumer
from engine.runtime.kafka.config import is_fatal
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.runtime.kafka.metrics import WorkerMetrics
from engine.runtime.schema_registry import reading_codec
from engine.settings import Settings
from streamers.batched import BatchedSink
from streamers.flights import Flight, Result, Submit
from streamers.observer import NullObserver, StreamerObserver
from streamers.per_event import ObjectWrite as ObjectWrite
from streamers.per_event import PerEventSink
from streamers.per_event import object_for_record as object_for_record
from streamers.work import Job, Outcome, Round, TopicPartitionKey, merge_offsets

# ObjectWrite and object_for_record are re-exported (``as``) for modules written
# against the loop's earlier home of these names (streamers.backfill).
log = structlog.get_logger(__name__)

# A round that is not done by then is "slow": partitions are paused and polled.
_FAST_ROUND_S = 1.0
_POLL_WHILE_WAITING_S = 0.2
# With writes under way, a fetch waits this long at most for a first record to top them up.
_TOP_UP_WAIT_S = 0.05
# Retries of a failing store back off up to this: an outage's end is noticed within it.
_MAX_BACKOFF_S = 10.0


def events_pattern(flow_id: str) -> str:
    """The subscription regex for every events topic of a flow (topics added later included)."""
    # Flow ids are slugs ([a-z0-9_-]): nothing in them needs escaping.
    return rf"^leadflow\.{flow_id}\.events\..+$"


def consumer_group_id(flow_id: str, destination: Destination) -> str:
    """One group per destination: ``leadflow.<flow>.streamer.<kind>.<bucket>[.<prefix>]``."""
    parts = ["leadflow", flow_id, "streamer", destination.kind, destination.bucket]
    prefix = normalise_prefix(destination.prefix)
    if prefix:
        parts.append(prefix)
    return ".".join(re.sub(r"[^A-Za-z0-9._-]", "_", part) for part in parts)


class Sink(Protocol):
    """Turns consumed records into rounds of writes (``per_event``, ``batched``)."""

    # How many of its rounds may be under way at once (``streamers.flights``): 1 where a
    # round's outcome can move the consumer (a batched object found covering another range).
    rounds_in_flight: int

    def add(self, records: list[Message]) -> None: ...

    def take_round(self, now: float, active: bool) -> Round | None:
        """The next writes to make durable, or None when nothing is ready."""
        ...

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked: drop what is held for them."""
        ...

    def rewind(self, tp: TopicPartitionKey) -> None:
        """The partition's position is about to move: drop what is held for it."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class StreamerStats:
    created: int = 0
    existed: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    batches_committed: int = 0
    rewinds: int = 0
    partitions_revoked: int = 0
    # Taken away without a revoke: e.g. the member was evicted for not polling in time.
    partitions_lost: int = 0


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
        observer: StreamerObserver | None = None,
    ) -> None:
        self.settings = settings
        self.flow = flow
        self.destination = destination
        self.group_id = consumer_group_id(flow.id, destination)
        self.threads = threads
        self.batch_size = batch_size or settings.batch_size
        self.stats = StreamerStats()
        self.observer: StreamerObserver = observer or NullObserver()
        self._store = store
        self._overrides = dict(consumer_overrides or {})
        self._codec = reading_codec(self.settings)
        self._sink = self._make_sink()
        self._paused = False
        # Offsets of durable rounds whose commit failed; retried with the next commit.
        self._uncommitted: dict[TopicPartitionKey, int] = {}
        self._log = log.bind(destination=destination.name, group=self.group_id)
        self.metrics = WorkerMetrics(f"streamer:{flow.id}:{destination.key}")
        self._consume_errors = ConsumeErrors(self.group_id, self.metrics.consume_error)

    def _make_sink(self) -> Sink:
        d = self.destination
        if d.batched:
            return BatchedSink(
                self._codec,
                d.prefix,
                self.flow.id,
                d.format,
                d.batch,
                self._dead_lettered,
                time.monotonic,
            )
        return PerEventSink(self._codec, d.prefix, d.effective_layout, self._dead_lettered)

    def run(self, stop: threading.Event) -> None:
        """Stream until ``stop`` is set. Work interrupted by ``stop`` is not committed."""
        store = self._store or open_store(self.destination, self.settings, threads=self.threads)
        pattern = events_pattern(self.flow.id)
        consumer = new_pattern_consumer(self.settings, self.group_id, pattern, **self._overrides)
        consumer.subscribe([pattern], on_revoke=self._forget, on_lost=self._lost)
        self._log.info(
            "streamer started",
            threads=self.threads,
            batch_size=self.batch_size,
            format=self.destination.format,
            layout=self.destination.effective_layout,
        )
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="put") as pool:
                self._loop(consumer, pool, store, stop)
        finally:
            self._sink.close()
            consumer.close()
            if self._store is None:
                store.close()
            self._log.info("streamer stopped", **dataclasses.asdict(self.stats))

    def _loop(
        self,
        consumer: Consumer,
        pool: ThreadPoolExecutor,
        store: ObjectStore,
        stop: threading.Event,
    ) -> None:
        window: deque[Flight] = deque()
        blocked_since: float | None = None

        def submit(job: Job) -> Future[Result]:
            return pool.submit(self._attempt, job, store, stop)

        while not stop.is_set():
            self._settle(consumer, window, submit)
            if window and not self._has_room(window):
                # Writes under way fill the window, or are failing: wait for them.
                blocked_since = blocked_since or time.monotonic()
                self._wait_for_writes(consumer, window, blocked_since, stop)
                continue
            blocked_since = None
            if not self.observer.active():
                # Deactivated: hold the position, stay in the group, fetch nothing.
                self._pause(consumer)
                self._wait_polling(consumer, 1.0, stop)
                continue
            self._resume(consumer)
            self._feed(consumer, window, submit)
        unfinished = [f for f in window if not f.durable]
        if unfinished:
            self._log.info(
                "stopped mid-round, not committing",
                rounds=len(unfinished),
                jobs=sum(len(f.work.jobs) for f in unfinished),
            )
        for flight in window:
            for done in flight.work.done:
                done()

    def _has_room(self, window: deque[Flight]) -> bool:
        """Whether another round may start: the destination is active, no round waits for
        a retry (a failing store gets no new writes), and the window has room - rounds, and
        jobs enough to keep every writer busy until the next round is ready."""
        if not self.observer.active():
            return False
        if any(f.failed or f.retry_at is not None for f in window):
            return False
        if len(window) >= self._sink.rounds_in_flight:
            return False
        return sum(f.unfinished() for f in window) < max(self.batch_size, 4 * self.threads)

    def _feed(self, consumer: Consumer, window: deque[Flight], submit: Submit) -> None:
        """Start the sink's next round; fetch first when it has none ready."""
        work = self._sink.take_round(time.monotonic(), True)
        if work is None:
            # With writes under way, take what has arrived (waiting briefly for a first
            # record): the writers must not wait for a batch to fill. With none, wait for
            # a record - for a full batch where rounds go one at a time (batched objects),
            # there a round per batch, not per record, is worth the wait.
            timeout = _TOP_UP_WAIT_S if window else 0.5
            fill = not window and self._sink.rounds_in_flight == 1
            records = self._consume(consumer, timeout, fill=fill)
            self._sink.add(records)
            self._report(records, consumer)
            work = self._sink.take_round(time.monotonic(), True)
        if work is not None:
            window.append(Flight.start(work, submit))

    # -- consuming ---------------------------------------------------------------------

    def _consume(self, consumer: Consumer, timeout: float, *, fill: bool = True) -> list[Message]:
        """Up to a batch of records, waiting up to ``timeout`` for a full one (``fill``) or
        for the first; a fatal consume error raises (the kit's fetch)."""
        return fetch(consumer, self.batch_size, timeout, self._consume_errors, fill=fill)

    def _report(self, records: list[Message], consumer: Consumer) -> None:
        """The records handed to the sink to the metrics."""
        if records:
            per_topic: dict[str, int] = {}
            for msg in records:
                topic = msg.topic() or ""
                per_topic[topic] = per_topic.get(topic, 0) + 1
            for topic, count in per_topic.items():
                self.metrics.records_in(topic, "streamed", count)
        self.metrics.sample_lag(consumer)

    def _pause(self, consumer: Consumer) -> None:
        if not self._paused:
            consumer.pause(consumer.assignment())
            self._paused = True

    def _resume(self, consumer: Consumer) -> None:
        if self._paused:
            consumer.resume(consumer.assignment())
            self._paused = False

    def _wait_polling(self, consumer: Consumer, seconds: float, stop: threading.Event) -> bool:
        """Wait ``seconds`` while polling the paused consumer; False if ``stop`` came first."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._poll_paused(consumer, min(remaining, _POLL_WHILE_WAITING_S))
        return False

    def _poll_paused(self, consumer: Consumer, timeout: float) -> None:
        # Polling keeps the member in its group and serves rebalances. Records can
        # still arrive (prefetched, or of a partition assigned since the pause):
        # they are not ours to handle now, so their partitions go back to them.
        records = self._consume(consumer, timeout)
        first: dict[TopicPartitionKey, int] = {}
        for msg in records:
            tp = (msg.topic() or "", msg.partition() or 0)
            first[tp] = min(first.get(tp, msg.offset() or 0), msg.offset() or 0)
        if first:
            partitions = [TopicPartition(t, p, o) for (t, p), o in first.items()]
            consumer.pause(partitions)
            for partition in partitions:
                consumer.seek(partition)

    # -- writing -------------------------------------------------------------------------

    def _settle(self, consumer: Consumer, window: deque[Flight], submit: Submit) -> None:
        """Take in the attempts that ended, start the retries that are due, and commit the
        rounds at the front of the window that are durable in full (in the order read)."""
        now = time.monotonic()
        for flight in window:
            if flight.collect() and flight.failed:
                flight.attempt += 1
                self.stats.failed_attempts += len(flight.failed)
                for error in flight.errors:
                    self.observer.failed(error)
                delay = backoff_delay(flight.attempt, cap_s=_MAX_BACKOFF_S)
                self._log.warning(
                    "writes failed, retrying",
                    failed=len(flight.failed),
                    of=len(flight.failed) + len(flight.outcomes),
                    attempt=flight.attempt,
                    retry_in_s=round(delay, 2),
                    error=str(flight.errors[0]),
                )
                flight.retry_at = now + delay
            elif flight.retry_at is not None and now >= flight.retry_at:
                flight.retry(submit)
        durable: list[Flight] = []
        while window and window[0].durable:
            durable.append(window.popleft())
        if durable:
            self._apply(consumer, durable)

    def _wait_for_writes(
        self,
        consumer: Consumer,
        window: deque[Flight],
        blocked_since: float,
        stop: threading.Event,
    ) -> None:
        """Wait a little for the oldest round's writes (or its retry). A store that is slow
        (past ``_FAST_ROUND_S``) or failing: the consumer is paused and polled, so it stays
        in its group without fetching more."""
        front = window[0]
        running = front.running()
        retries = [f.retry_at for f in window if f.retry_at is not None]
        timeout = _POLL_WHILE_WAITING_S
        if retries:
            timeout = max(0.0, min(timeout, min(retries) - time.monotonic()))
        slow = time.monotonic() - blocked_since >= _FAST_ROUND_S
        if running and not slow and not retries:
            wait(running, timeout=timeout)
            return
        self._pause(consumer)
        if running:
            self._poll_paused(consumer, 0)
            if not stop.is_set():
                wait(running, timeout=timeout)
        else:
            self._poll_paused(consumer, timeout)

    def _attempt(
        self, job: Job, store: ObjectStore, stop: threading.Event
    ) -> Outcome | DestinationError | None:
        if stop.is_set():
            return None  # shutting down: do not start new writes
        try:
            return job(store)
        except DestinationError as exc:
            return exc

    def _apply(self, consumer: Consumer, flights: list[Flight]) -> None:
        commit: dict[TopicPartitionKey, int] = {}
        seeks: dict[TopicPartitionKey, int] = {}
        now = time.monotonic()
        for flight in flights:
            merge_offsets(commit, flight.work.commit)
            for outcome in flight.outcomes:
                for written in outcome.written:
                    if written.created:
                        self.stats.created += 1
                    else:
                        self.stats.existed += 1
                    self.observer.written(written.key, written.size, written.created)
                self.metrics.records_out(self.destination.key, len(outcome.written))
                merge_offsets(commit, outcome.commit)
                seeks.update(outcome.seek)
            # A round's objects, from its start until all were durable (its commit apart).
            self.metrics.batch(flight.objects(), now - flight.started)
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        self._commit(consumer, {tp: o for tp, o in commit.items() if tp in assigned})
        for (topic, partition), offset in seeks.items():
            if (topic, partition) not in assigned:
                continue
            # The store already held a different range under this name: it is the
            # truth up to its last offset; read on from just after it.
            self._sink.rewind((topic, partition))
            consumer.seek(TopicPartition(topic, partition, offset))
            self.stats.rewinds += 1
            self._log.info(
                "object already covers another range, continuing after it",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        for flight in flights:
            for done in flight.work.done:
                done()

    def _commit(self, consumer: Consumer, offsets: dict[TopicPartitionKey, int]) -> None:
        if not offsets and not self._uncommitted:
            return
        merge_offsets(self._uncommitted, offsets)
        partitions = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
        started = time.monotonic()
        try:
            consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            if is_fatal(exc.args[0]):
                raise  # this consumer is dead: exit, so the supervisor starts another
            # The objects are durable; a failed commit only means a replay that
            # finds them already there. Kept and retried with the next round.
            self._log.warning("offset commit failed", error=str(exc.args[0]))
            return
        self.metrics.committed(time.monotonic() - started)
        committed, self._uncommitted = self._uncommitted, {}
        self.stats.batches_committed += 1
        self.observer.committed(committed)

    def _forget(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        # Partitions moving to another member: their new owner resumes from the
        # last commit, so our uncommitted offsets must not overwrite its progress.
        self.stats.partitions_revoked += len(partitions)
        self._sink.forget(partitions)
        for tp in partitions:
            self._uncommitted.pop((tp.topic, tp.partition), None)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.partitions_lost += len(partitions)
        self._log.warning("partitions lost", partitions=len(partitions))
        self._forget(consumer, partitions)

    def _dead_lettered(self, topic: str, partition: int, offset: int, write: ObjectWrite) -> None:
        self.stats.dead_lettered += 1
        self.metrics.dead_letters(self.destination.key, 1)
        self._log.warning(
            "undecodable record, dead-lettered",
            topic=topic,
            partition=partition,
            offset=offset,
            key=write.key,
            reason=write.dead_letter_reason,
        )


def run_streamers(
    settings: Settings,
    flow: Flow,
    stop: threading.Event,
    *,
    threads: int = DEFAULT_THREADS,
    consumer_overrides: Mapping[str, Any] | None = None,
    observers: Mapping[str, StreamerObserver] | None = None,
) -> list[Streamer]:
    """Stream ``flow``'s events to each enabled destination, one thread each, until ``stop``.

    Write failures are retried inside each streamer and never end it; an
    unexpected error (a bug, a fatal Kafka error) stops all streamers and is
    re-raised, so the process exits and its supervisor restarts it. Returns
    the streamers (for their stats) once all have stopped. ``observers`` maps a
    destination's ``key`` to its observer (default: none).
    """
    streamers = [
        Streamer(
            settings,
            flow,
            d,
            threads=threads,
            consumer_overrides=consumer_overrides,
            observer=(observers or {}).get(d.key),
        )
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
