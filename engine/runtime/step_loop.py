"""The transactional step loop: consume, handle, produce, commit - exactly once.

One transactional producer per worker process. Records are consumed in
batches; their outputs and the consumer offsets are committed together in a
Kafka transaction once the consumer has nothing more waiting and the
transaction is ``commit_linger_ms`` old, and at the latest every
``commit_interval_ms``: a busy step's batches stay full and commit on the
interval, a quiet step hands each lead on within the linger. A crash anywhere
aborts the open transaction: readers with ``read_committed`` never see its
outputs, and the offsets were not committed, so the restarted worker redoes
exactly that work with the same event ids.

A broker that dies is not a crash: the transaction it breaks (its messages time
out, the coordinator moves, a commit or an abort times out) is aborted, the input
is rewound to the committed offsets and the loop backs off and goes on, in the
same process. Only a fatal error (fenced by a newer instance, the producer unusable)
ends the process, for its supervisor to start another.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeGuard

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from engine.errors import TransientStepError
from engine.runtime.backoff import backoff_delay
from engine.runtime.handlers import PoisonMessageError, Record, StepHandler, header_map
from engine.runtime.kafka.config import is_fatal
from engine.runtime.kafka.dead_letter import dead_letter_record
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.runtime.kafka.metrics import WorkerMetrics
from engine.topics import DUE_HEADER

log = structlog.get_logger(__name__)

# The longest wait between two attempts at a transactional call that keeps failing with
# a retriable error (a broker or coordinator away): short enough to notice it is back.
RETRY_CAP_S = 5.0


def transaction_broken(exc: BaseException) -> TypeGuard[KafkaException]:
    """``exc`` says the producer refused to go on with the open transaction, not that the
    record in hand is wrong: the transaction failed underneath (``produce`` answers _STATE
    in the abortable-error state), the producer is fenced or dead, or a call may be
    retried. Such a record is never dead-lettered: the batch is redone (or the process
    restarted) instead. Anything else from ``produce`` (a record too large) is the
    record's own."""
    if not isinstance(exc, KafkaException):
        return False
    error: KafkaError = exc.args[0]
    return bool(
        is_fatal(error)
        or error.txn_requires_abort()
        or error.retriable()
        or error.code() in (KafkaError._STATE, KafkaError._FENCED)
    )


class TransactionalStepLoop:
    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        handler: StepHandler,
        input_topic: str,
        output_topic: str,
        dlq_topic: str,
        batch_size: int = 500,
        commit_interval_ms: int = 100,
        commit_linger_ms: int = 10,
        idle_wait_s: float = 0.1,
        retry_topic: str | None = None,
        watch: Callable[[], StepHandler | None] | None = None,
        watch_interval_s: float = 2.0,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.batch_size = batch_size
        self.commit_interval = commit_interval_ms / 1000
        self.linger = commit_linger_ms / 1000
        self.idle_wait = idle_wait_s
        self.retry_topic = retry_topic
        # Asked between batches for a handler built from a newer flow version.
        self.watch = watch
        self.watch_interval = watch_interval_s
        self.watched_at = time.monotonic()
        # Retry-topic partitions held back until their head record is due (epoch ms).
        self.held: dict[tuple[str, int], int] = {}
        self.transient_failures = 0
        self.in_txn = False
        # Per partition, the offset after the last record handled in the open
        # transaction: what the transaction commits. Not consumer.position(),
        # which is past the whole consumed batch - committing that mid-batch
        # would skip the batch's unhandled records after a crash.
        self.pending: dict[tuple[str, int], int] = {}
        self.txn_started = 0.0
        self.processed = 0
        self.dead_lettered = 0
        # Records produced, and of them those a record sent to a topic of its own (retry,
        # dead-letter, feedback): read once per batch by the metrics.
        self.produced = 0
        self.produced_to: dict[str, int] = {}
        self.metrics = metrics or WorkerMetrics("step")
        self._consume_errors = ConsumeErrors(input_topic, self.metrics.consume_error)
        # The worker's stop event once ``run`` has it: the backoff after an aborted
        # transaction ends early when the worker is asked to stop.
        self.stop = threading.Event()

    # -- transaction boundaries -------------------------------------------------

    def _begin(self) -> None:
        if not self.in_txn:
            self.producer.begin_transaction()
            self.in_txn = True
            self.txn_started = time.monotonic()

    def _commit(self) -> bool:
        """Commit the open transaction; False if it had to be aborted (input rewound)."""
        if not self.in_txn:
            return True
        offsets = self._offsets()
        try:
            if offsets:
                metadata = self.consumer.consumer_group_metadata()
                self._retrying(
                    "send_offsets_to_transaction",
                    lambda: self.producer.send_offsets_to_transaction(offsets, metadata),
                )
            # Flushes first: messages that timed out while their partition's leader was
            # down make this an abortable error ("N message(s) timed out").
            self._retrying("commit_transaction", self.producer.commit_transaction)
        except KafkaException as exc:
            self._recover(exc)
            return False
        finally:
            self.in_txn = False
            self.pending.clear()
        self._committed()
        return True

    def _offsets(self) -> list[TopicPartition]:
        """What the open transaction commits: per partition, the offset after the last
        record handled in it."""
        return [TopicPartition(t, p, o) for (t, p), o in self.pending.items()]

    def _committed(self) -> None:
        """Called after each transaction that commits; nothing to do here."""

    def _recover(self, exc: KafkaException) -> None:
        """A transaction that cannot commit: abort it, rewind and back off, unless the
        error is fatal (fenced by a newer instance, the producer unusable), which ends
        the process: its supervisor starts another."""
        error: KafkaError = exc.args[0]
        if is_fatal(error):
            raise exc
        log.warning(
            "transaction failed, aborting and rewinding",
            error=str(error),
            abortable=bool(error.txn_requires_abort()),
        )
        self._abort_and_rewind(self.stop)

    def _retrying(self, call: str, api: Callable[[], object]) -> None:
        """Call a transactional API again for as long as it fails with a retriable error.

        librdkafka goes on with a timed-out commit or abort in the background and wants
        the *same* call again to finish it (any other transactional call answers
        _CONFLICT meanwhile), so nothing else is tried in between. While a broker is
        down that is the normal case: a commit or an abort waiting for a coordinator
        that moves times out. Abortable and fatal errors go to the caller."""
        attempt = 0
        while True:
            try:
                api()
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if is_fatal(error) or error.txn_requires_abort() or not error.retriable():
                    raise
                attempt += 1
                log.warning(
                    "kafka call failed, retrying", call=call, attempt=attempt, error=str(error)
                )
                time.sleep(backoff_delay(attempt, cap_s=RETRY_CAP_S))

    def _abort(self) -> None:
        self._retrying("abort_transaction", self.producer.abort_transaction)
        self.in_txn = False
        self.pending.clear()

    def _read_committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets (with their metadata) of ``partitions``.

        Asked until the group coordinator answers (it may be on the broker that just
        died): reading on from the current position instead would skip the aborted
        records for good."""
        attempt = 0
        while True:
            try:
                return list(self.consumer.committed(partitions, timeout=10))
            except KafkaException as exc:
                if is_fatal(exc.args[0]):
                    raise
                attempt += 1
                log.warning(
                    "committed offsets not readable, retrying", attempt=attempt, error=str(exc)
                )
                time.sleep(backoff_delay(attempt, cap_s=RETRY_CAP_S))

    def _rewind(self) -> None:
        """After an abort, go back to the last committed offsets so no input is skipped."""
        committed = self._read_committed(self.consumer.assignment())
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def on_revoke(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit before the partitions move, so the next owner starts exactly
        # where this transaction ends.
        for tp in partitions:
            self.held.pop((tp.topic, tp.partition), None)
        if self.in_txn:
            log.info("partitions revoked, committing", partitions=len(partitions))
            self._commit()

    # -- processing ---------------------------------------------------------------

    def _produce(self, records: list[Record]) -> None:
        for rec in records:
            if rec.topic is None:
                self.producer.produce(self.output_topic, rec.value, rec.key, headers=rec.headers)
            else:
                self.producer.produce(rec.topic, rec.value, rec.key, headers=rec.headers)
                self.produced_to[rec.topic] = self.produced_to.get(rec.topic, 0) + 1
        self.produced += len(records)

    def _hold_if_not_due(self, msg: Message) -> bool:
        """A retry record that is not due yet: rewind its partition to it and pause the
        partition until then (no sleeping: other partitions and topics keep flowing)."""
        if msg.topic() != self.retry_topic:
            return False
        due = int(header_map(msg).get(DUE_HEADER, b"0"))
        if due <= time.time() * 1000:
            return False
        tp = TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        self.consumer.seek(tp)
        self.consumer.pause([tp])
        self.held[(tp.topic, tp.partition)] = due
        return True

    def _release_due(self) -> None:
        now = time.time() * 1000
        due = [key for key, at in self.held.items() if at <= now]
        if due:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])
            for key in due:
                del self.held[key]

    def _abort_and_rewind(self, stop: threading.Event) -> None:
        if self.in_txn:
            self._abort()
        self.pending.clear()
        self._rewind()
        self.transient_failures += 1
        stop.wait(backoff_delay(self.transient_failures, cap_s=10.0))

    def _dead_letter(self, msg: Message, error: str) -> None:
        value, key, headers = dead_letter_record(msg, error)
        self.producer.produce(self.dlq_topic, value, key, headers=headers)
        self.dead_lettered += 1
        log.warning(
            "dead-lettered",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            error=error,
        )

    def process(self, messages: list[Message], stop: threading.Event | None = None) -> None:
        stop = stop or self.stop
        for msg in messages:
            err = msg.error()
            if err is not None:
                if is_fatal(err):
                    raise KafkaException(err)  # fenced or dead: the supervisor restarts us
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=str(err))
                continue
            if (msg.topic(), msg.partition()) in self.held or self._hold_if_not_due(msg):
                continue  # rewound: this partition's records come again once due
            self._begin()
            try:
                self._produce(self.handler.handle(msg))
            except TransientStepError as exc:
                log.warning("step cannot decide now, aborting and rewinding", error=str(exc))
                self._abort_and_rewind(stop)
                return  # the rest of this batch is re-read after the rewind
            except Exception as exc:  # a bug on one lead must not stop the flow
                if transaction_broken(exc):
                    # The producer refused the outputs: the transaction failed under it (a
                    # broker away). Nothing is wrong with the record: redo the batch.
                    self._recover(exc)
                    return
                if isinstance(exc, PoisonMessageError):
                    error = f"PoisonMessage: {exc}"
                else:
                    log.error("step failed on a record", exc_info=True)
                    error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
                try:
                    self._dead_letter(msg, error)
                except KafkaException as dlq_exc:
                    if not transaction_broken(dlq_exc):
                        raise
                    self._recover(dlq_exc)
                    return
            self.pending[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            self.processed += 1
            self.transient_failures = 0
            if time.monotonic() - self.txn_started >= self.commit_interval and not self._commit():
                return  # aborted and rewound: the rest of this batch is read again

    def run(self, stop: threading.Event) -> None:
        self.stop = stop
        # Retriable while the transaction coordinator is away (a worker restarted during
        # a broker outage): wait for it rather than exit.
        self._retrying("init_transactions", self.producer.init_transactions)
        topics = [self.input_topic] + ([self.retry_topic] if self.retry_topic else [])
        self.consumer.subscribe(topics, on_revoke=self.on_revoke, on_lost=self._on_lost)
        try:
            while not stop.is_set():
                self._follow_flow_changes()
                self._release_due()
                messages = self._fetch(self._wait())
                if messages:
                    self._process_metered(messages, stop)
                self.metrics.sample_lag(self.consumer)
                # Drained (a short batch) and lingered: nothing to wait for, the leads go on.
                if self.in_txn:
                    age = time.monotonic() - self.txn_started
                    drained = len(messages) < self.batch_size
                    if age >= self.commit_interval or (drained and age >= self.linger):
                        self._commit()
        finally:
            self._commit()
            self.consumer.close()
            self.producer.flush(10)
            self.handler.close()

    def _wait(self) -> float:
        """How long a fetch may block: with a transaction open, only until its linger ends."""
        if not self.in_txn:
            return self.idle_wait
        return max(0.0, min(self.idle_wait, self.txn_started + self.linger - time.monotonic()))

    def _fetch(self, wait: float, max_records: int | None = None) -> list[Message]:
        """Up to a batch of records, waking at the first one (the kit's ``fetch``: a quiet
        lead never waits for a batch to fill); error messages are triaged there, a fatal
        one raising, so ``process`` sees records only."""
        limit = self.batch_size if max_records is None else max_records
        messages = fetch(self.consumer, limit, wait, self._consume_errors)
        # Optional handler hook (a sealing flow's handler looks up the batch's lead keys in
        # one query); a lookup that fails now is made again per lead, where it is retried.
        prefetch = getattr(self.handler, "prefetch", None)
        if messages and prefetch is not None:
            try:
                prefetch(messages)
            except TransientStepError as exc:
                log.warning("prefetch failed, looking up per lead", error=str(exc))
        return messages

    def _process_metered(self, messages: list[Message], stop: threading.Event) -> None:
        """``process`` the batch, then report it to the metrics: counts are read once per
        batch from the loop's own counters, never per record."""
        started = time.monotonic()
        processed, dead, produced = self.processed, self.dead_lettered, self.produced
        self.produced_to.clear()
        self.process(messages, stop)
        metrics = self.metrics
        metrics.batch(len(messages), time.monotonic() - started)
        handled, dead = self.processed - processed, self.dead_lettered - dead
        metrics.records_in(self.input_topic, "processed", handled - dead)
        metrics.records_in(self.input_topic, "dead_lettered", dead)
        # Held until due (retries) or read again after an abort: they come back.
        metrics.records_in(self.input_topic, "requeued", len(messages) - handled)
        elsewhere = sum(self.produced_to.values())
        metrics.records_out(self.output_topic, self.produced - produced - elsewhere)
        for topic, count in self.produced_to.items():
            metrics.records_out(topic, count)
        metrics.records_out(self.dlq_topic, dead)
        metrics.dead_letters(self.dlq_topic, dead + self.produced_to.get(self.dlq_topic, 0))

    def _follow_flow_changes(self) -> None:
        """Swap in the handler of a newly applied flow version, between transactions:
        everything before the swap commits under the old version, everything after
        is processed (and stamped) under the new one."""
        if self.watch is None or time.monotonic() - self.watched_at < self.watch_interval:
            return
        self.watched_at = time.monotonic()
        new = self.watch()
        if new is not None:
            self._commit()
            self.handler.close()
            self.handler = new
            log.info("flow definition updated")

    def _on_lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        # Partitions lost (not revoked) belong to someone else already: our open
        # transaction must not commit their offsets.
        if self.in_txn:
            log.warning("partitions lost, aborting", partitions=len(partitions))
            self._abort()
            self._rewind()


def stats(loop: TransactionalStepLoop) -> dict[str, Any]:
    return {"processed": loop.processed, "dead_lettered": loop.dead_lettered}
