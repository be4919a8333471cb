"""The projector loop: every events topic into one projection, exactly once, no Kafka transactions.

Delivery: each batch of records is written together with the offset after the
last record of each of its partitions, in one Postgres transaction
(``store.write_batch``). On assignment a partition starts from that stored
checkpoint (or the beginning), never from the consumer group's offset, which
is committed afterwards only so that lag shows up in the usual tools. So:

* a crash before the commit loses nothing: the batch is read again;
* a crash after it duplicates nothing: reading resumes after the batch, and
  even a replay would only meet primary keys (``ON CONFLICT DO NOTHING``);
* when Postgres goes away the same batch is retried, with backoff, until it
  is written or the projector is stopped; nothing is ever skipped.

Undecodable records are written to ``projector_rejects`` in the same
transaction and the stream goes on.

Rows and checkpoints go to the projection's active generation
(``projectors.generations``). When a rebuild switches generations, the next
batch fails its guard; the projector drops what it holds, seeks every
partition to the new generation's checkpoints and goes on there.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from engine.runtime.backoff import backoff_delay
from engine.runtime.kafka.clients import new_pattern_consumer
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.runtime.kafka.metrics import WorkerMetrics
from engine.runtime.schema_registry import SchemaRegistryUnavailableError, reading_codec
from engine.settings import Settings
from engine.topics import EVENTS_PATTERN
from projectors.analytics import ANALYTICS
from projectors.batch import Batch, Record, build_batch
from projectors.errors import StoreUnavailableError
from projectors.generations import Generation, GenerationChangedError, current, migrate
from projectors.partitions import make_ahead
from projectors.projection import Projection
from projectors.store import Connection, connect
from projectors.timeline import TIMELINE
from projectors.writing import load_checkpoints, write_batch

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_BATCH_SIZE = 2000
DEFAULT_BATCH_MS = 200
_IDLE_POLL_S = 0.5
# How often a running projector does its housekeeping (the timeline's partitions ahead).
MAINTAIN_EVERY_S = 3600.0


class ProjectorStopped(Exception):
    """``stop`` was set while the projector was waiting for Postgres."""


def consumer_group(name: str, schema: str) -> str:
    """The group a projector reads in: per serving schema, as two deployments sharing a
    cluster must not split each other's partitions. ``name`` also keys its checkpoints."""
    return f"leadflow.projector.{schema}.{name}"


@dataclass(slots=True)
class ProjectorStats:
    records: int = 0  # Kafka records written, events and rejects
    inserted: int = 0  # events new to the table (replays insert none)
    rejects: int = 0
    batches: int = 0
    store_retries: int = 0


class Projector:
    """Projects every topic matching ``pattern`` into the class's ``projection``.

    ``name`` (default: the projection's) keys the checkpoints: two instances
    with the same name share the work (one consumer group) and the position; a
    new name replays every topic from the beginning into the same tables, which
    the projections' keys make harmless.
    """

    projection: ClassVar[Projection]

    def __init__(
        self,
        settings: Settings,
        pattern: str = EVENTS_PATTERN,
        name: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_ms: int = DEFAULT_BATCH_MS,
        consumer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.pattern = pattern
        self.name = name or self.projection.name
        self.group_id = consumer_group(self.name, settings.db_schema)
        self.batch_size = batch_size
        self.batch_ms = batch_ms
        self.stats = ProjectorStats()
        # The partitions this instance owns right now. Replaced, never mutated,
        # so other threads (health checks, tests) can read it without a lock.
        self.assigned: frozenset[tuple[str, int]] = frozenset()
        self._overrides = dict(consumer_overrides or {})
        self._codec = reading_codec(self.settings)
        self._conn: Connection | None = None
        self._stop = threading.Event()
        self._pending: list[Record] = []
        self._generation: Generation | None = None
        # Set when an assignment found that a switch retired our generation: the loop
        # moves every partition to the active one before it writes anything.
        self._switched_while_idle = False
        self._log = log.bind(projector=self.name, projection=self.projection.name)
        self.metrics = WorkerMetrics(f"projector:{self.name}")
        self._consume_errors = ConsumeErrors(self.group_id, self.metrics.consume_error)

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Project until ``stop`` is set, then write the batch in hand, close and return."""
        self._stop = stop
        try:
            self._with_store(lambda conn: migrate(conn, self.settings.db_schema))
            self._generation = self._with_store(self._active_generation)
            self._with_store(self._maintain)
        except ProjectorStopped:
            self.close()
            return
        consumer = new_pattern_consumer(
            self.settings, self.group_id, self.pattern, **self._overrides
        )
        consumer.subscribe(
            [self.pattern],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._log.info("projector started", pattern=self.pattern, batch_size=self.batch_size)
        maintained = time.monotonic()
        try:
            while True:
                if time.monotonic() - maintained >= MAINTAIN_EVERY_S:
                    self._with_store(self._maintain)
                    maintained = time.monotonic()
                self._fill(consumer)
                if self._switched_while_idle:
                    self._follow_switch(consumer)
                    continue
                if self._pending:
                    records, self._pending = self._pending, []
                    try:
                        batch = self.process_batch(records)
                    except GenerationChangedError:
                        self._follow_switch(consumer)
                        continue
                    self._commit_to_kafka(consumer, batch)
                self.metrics.sample_lag(consumer)
                if stop.is_set():
                    break
        except ProjectorStopped:
            self._log.warning("stopped while postgres was unavailable; resumes from checkpoint")
        finally:
            consumer.close()
            self.close()
            self._log.info("projector stopped", **self._stats_dict())

    def process_batch(self, records: Sequence[Record]) -> Batch:
        """Decode ``records`` and write them with their checkpoints in one transaction.

        Retries the same batch until it is written (the write is idempotent, so
        a commit whose outcome was lost is safe to repeat); raises
        ``ProjectorStopped`` if ``stop`` comes first.
        """
        started = time.monotonic()
        batch = self._build(records)
        built = time.monotonic()
        for reject in batch.rejects:
            r = reject.record
            self._log.warning(
                "undecodable record rejected",
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                error=reject.error,
            )
        generation = self._generation
        inserted = self._with_store(
            lambda conn: write_batch(conn, self.name, batch, generation, self.projection)
        )
        self.stats.records += batch.records
        self.stats.inserted += inserted
        self.stats.rejects += len(batch.rejects)
        self.stats.batches += 1
        self._report(records, batch, inserted, started, built)
        self._log.debug(
            "batch written",
            records=batch.records,
            inserted=inserted,
            rejects=len(batch.rejects),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return batch

    def _report(
        self, records: Sequence[Record], batch: Batch, inserted: int, started: float, built: float
    ) -> None:
        """A written batch to the metrics: decoding is its processing time, the Postgres
        transaction (rows and checkpoints, retries included) its commit time."""
        metrics = self.metrics
        metrics.batch(len(records), built - started)
        metrics.committed(time.monotonic() - built)
        per_topic: dict[str, int] = {}
        for record in records:
            per_topic[record.topic] = per_topic.get(record.topic, 0) + 1
        for reject in batch.rejects:
            per_topic[reject.record.topic] -= 1
            metrics.records_in(reject.record.topic, "rejected", 1)
        for topic, count in per_topic.items():
            metrics.records_in(topic, "written", count)
        metrics.records_out(self.projection.name, inserted)
        metrics.dead_letters("projector_rejects", len(batch.rejects))

    def close(self) -> None:
        """Close the Postgres connection (``run`` does this itself)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _fill(self, consumer: Consumer) -> None:
        """Add records to the batch in hand until it is full or ``batch_ms`` after its first."""
        deadline: float | None = None
        while len(self._pending) < self.batch_size:
            timeout = _IDLE_POLL_S if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                return
            wanted = self.batch_size - len(self._pending)
            for msg in fetch(consumer, wanted, timeout, self._consume_errors):
                self._pending.append(
                    Record(
                        msg.topic() or "",
                        msg.partition() or 0,
                        msg.offset() or 0,
                        msg.value(),
                        msg.key(),
                    )
                )
            if self._stop.is_set() or not self._pending:
                return  # stopping, or idle: let run() look at stop
            if deadline is None:
                deadline = time.monotonic() + self.batch_ms / 1000

    def _build(self, records: Sequence[Record]) -> Batch:
        """Decode the batch; while the schema registry cannot say what an unknown schema id
        is, wait and try again (nothing is wrong with the records: no reject for them)."""
        attempt = 0
        while True:
            try:
                return build_batch(self._codec, records)
            except SchemaRegistryUnavailableError as exc:
                attempt += 1
                delay = backoff_delay(attempt, cap_s=10.0)
                self._log.warning(
                    "schema registry unavailable, retrying",
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                    error=str(exc),
                )
                if self._stop.wait(delay):
                    raise ProjectorStopped from exc

    # -- Postgres, with retries -------------------------------------------------------------

    def _with_store(self, action: Callable[[Connection], T]) -> T:
        attempt = 0
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    app_name = f"leadflow-projector-{self.name}"
                    self._conn = connect(self.settings, application_name=app_name)
                return action(self._conn)
            except StoreUnavailableError as exc:
                self.close()
                attempt += 1
                self.stats.store_retries += 1
                delay = backoff_delay(attempt, cap_s=10.0)
                self._log.warning(
                    "postgres unavailable, retrying",
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                    error=str(exc),
                )
                if self._stop.wait(delay):
                    raise ProjectorStopped from exc

    # -- Kafka ------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each new partition at our checkpoint, or at the beginning if it has none."""
        if partitions:
            topics = sorted({tp.topic for tp in partitions})
            # The active generation's checkpoints, not necessarily ours: a rebuild may have
            # switched while this projector had nothing to write (so no batch failed its
            # guard yet), and `projections drop` may have dropped ours since - reading
            # its checkpoints then raised and ended the projector.
            active = self._with_store(self._active_generation)
            if self._generation is not None and active.schema != self._generation.schema:
                self._switched_while_idle = True
            checkpoints = self._with_store(
                lambda conn: load_checkpoints(conn, self.name, topics, active.schema)
            )
            for tp in partitions:
                tp.offset = checkpoints.get((tp.topic, tp.partition), OFFSET_BEGINNING)
            self._log.info(
                "partitions assigned",
                partitions=len(partitions),
                topics=len(topics),
                from_checkpoint=sum(1 for tp in partitions if tp.offset >= 0),
            )
        # The client would assign on its own after this callback, but with the
        # offsets it received: the ones set above only count if we assign.
        added = frozenset((tp.topic, tp.partition) for tp in partitions)
        if self._cooperative:
            consumer.incremental_assign(partitions)
            self.assigned = self.assigned | added
        else:
            consumer.assign(partitions)
            self.assigned = added

    @property
    def generation(self) -> Generation | None:
        """The generation this projector writes to (None until it has started)."""
        return self._generation

    @property
    def _cooperative(self) -> bool:
        strategy = str(self._overrides.get("partition.assignment.strategy", "cooperative"))
        return "cooperative" in strategy

    def _active_generation(self, conn: Connection) -> Generation:
        found = current(conn, self.settings.db_schema, self.projection.name, "active")
        if found is None:  # migrate() creates one; only a hand-made mess gets here
            raise LookupError(f"{self.projection.name} has no active generation")
        return found

    def _follow_switch(self, consumer: Consumer) -> None:
        """Move to the newly active generation: drop what is held, resume from its checkpoints."""
        old = self._generation
        self._generation = self._with_store(self._active_generation)
        self._switched_while_idle = False
        self._pending = []
        schema = self._generation.schema
        topics = sorted({topic for topic, _ in self.assigned})
        checkpoints = self._with_store(
            lambda conn: load_checkpoints(conn, self.name, topics, schema)
        )
        partitions = [
            TopicPartition(topic, partition, checkpoints.get((topic, partition), OFFSET_BEGINNING))
            for topic, partition in sorted(self.assigned)
        ]
        # Re-assigning, not seek(): a seek fails on a partition whose first
        # fetch has not started yet, and records already fetched are dropped either way.
        if self._cooperative:
            consumer.incremental_unassign(partitions)
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._log.info(
            "generation switched; resuming from its checkpoints",
            retired=old.number if old else None,
            active=self._generation.number,
            partitions=len(self.assigned),
        )

    def _on_revoke(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        # Records of partitions moving away are dropped, not written: their new
        # owner reads them again from the checkpoint, which does not include them.
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._pending = [r for r in self._pending if (r.topic, r.partition) not in gone]
        self.assigned = self.assigned - gone

    def _commit_to_kafka(self, consumer: Consumer, batch: Batch) -> None:
        """Mirror the checkpoints to the group's offsets, for lag monitoring only."""
        offsets = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in batch.next_offsets.items()
            if (topic, partition) in self.assigned
        ]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self._log.debug("offset commit failed", error=str(exc.args[0]))

    def _stats_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self.stats)

    def _maintain(self, conn: Connection) -> None:
        """The projection's housekeeping, at start and every ``MAINTAIN_EVERY_S``: none."""


class TimelineProjector(Projector):
    """The projector of ``TIMELINE``: ``leadflow run``'s ``projector`` role."""

    projection = TIMELINE

    def _maintain(self, conn: Connection) -> None:
        """Make the coming days' partitions of ``events`` before any batch needs one, so
        the write path (which makes a missing one itself) rarely has to lock the table."""
        if self._generation is not None:
            make_ahead(conn, self._generation.schema, datetime.now(UTC))


class AnalyticsProjector(Projector):
    """The projector of ``ANALYTICS``: ``leadflow run``'s ``analytics`` role."""

    projection = ANALYTICS
