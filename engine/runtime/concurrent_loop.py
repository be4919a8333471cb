"""A step loop that keeps many calls in flight: per-lead order, exactly once.

The one-at-a-time loop (``engine.runtime.step_loop``) waits for each buyer's answer
before it reads the next record, so a buyer at 500 ms caps a worker near 2 leads/s per
partition. This loop starts a record's calls (``Waiting``, from the handler's ``start``)
on a runner that makes them at once (``engine.runtime.calls``), reads on, and writes a
record's outputs when its answers are in. What stays the same is the transaction: the
outputs of finished records and the progress that says they are finished commit together.

- **Order per lead, not per partition.** Records with the same key (the lead id) form a
  *lane*: a lane's next record starts when the one before it is finished, so a lead's
  events stay in order; records of different leads run side by side.
- **Progress beyond the lowest unfinished offset.** A committed offset can only say
  "everything below N is done". The kit's ``PartitionProgress`` commits the lowest
  unfinished offset and lists the finished ones above it in the commit's metadata, in the
  same transaction as their outputs (as Confluent's Parallel Consumer does, but inside the
  EOS transaction): after a crash or a rebalance only unfinished records run again, and a
  record finished before the crash is never written twice.
- **Calls outside transactions.** A call runs while transactions open and commit around
  it; only its outputs go in one. So a slow buyer never holds a transaction open towards
  ``transaction.timeout.ms``.
- **An abort forgets everything unfinished.** When a transaction cannot commit (a broker
  away), the loop aborts, rewinds to the committed offsets and progress, and drops the
  answers of calls started before: those records run again. A cap slot a dropped call held
  stays reserved under the lead's id, and the re-run finds it.
- **Bounded.** At most ``max_in_flight`` records are taken and unfinished at once (in
  flight or queued behind their lane), and a partition whose finished offsets spread
  further than the metadata can carry is paused until its lowest record finishes.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from engine.errors import TransientStepError
from engine.runtime.handlers import PoisonMessageError, Record, StepHandler
from engine.runtime.handlers.base import Started, Waiting
from engine.runtime.kafka.progress import MAX_SPAN, MetadataError, PartitionProgress
from engine.runtime.step_loop import TransactionalStepLoop, transaction_broken
from engine.steps.calls import Answer, Call

log = structlog.get_logger(__name__)

TopicPart = tuple[str, int]

# While calls are out and nothing is fetched, how long the loop waits on answers before it
# fetches again: the most a new record waits to be taken.
ANSWER_POLL_S = 0.005


class ConcurrentCalls(Protocol):
    """A runner that makes many calls at once (``engine.runtime.calls.AsyncCallRunner``)."""

    def start(
        self,
        calls: list[Call],
        done: Callable[[list[Answer]], None],
        *,
        window_ms: int | None = None,
    ) -> None: ...


class StartingHandler(StepHandler, Protocol):
    """A handler that can take a record as far as it goes without waiting on a service."""

    def start(self, msg: Message) -> Started: ...


class _UnwritableError(Exception):
    """A record whose outputs the producer refused: it goes to the dead-letter topic."""


@dataclass(eq=False, slots=True)
class _Work:
    """One taken record: where it is from, its lane, and the handler it started under."""

    msg: Message
    tp: TopicPart
    offset: int
    lane: bytes
    handler: StartingHandler
    # False once the record is given up (an abort, its partition revoked): answers to its
    # calls that come later are dropped.
    live: bool = True


@dataclass(slots=True)
class _Answered:
    work: _Work
    waiting: Waiting
    answers: list[Answer] = field(default_factory=list)


class ConcurrentStepLoop(TransactionalStepLoop):
    """``TransactionalStepLoop`` with records in flight at once (see the module's doc)."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        handler: StartingHandler,
        *,
        calls: ConcurrentCalls,
        max_in_flight: int = 256,
        stop_grace_s: float = 5.0,
        **kwargs: object,
    ) -> None:
        super().__init__(consumer, producer, handler, **kwargs)  # type: ignore[arg-type]
        self.handler: StartingHandler = handler
        self.calls = calls
        self.max_in_flight = max_in_flight
        self.stop_grace = stop_grace_s
        self.progress: dict[TopicPart, PartitionProgress] = {}
        self.changed: set[TopicPart] = set()  # progress moved since the last commit
        self.lanes: dict[bytes, deque[_Work]] = {}
        self.taken = 0  # records taken and not finished: in lanes, waiting or queued
        self.waiting = 0  # records whose calls are out
        self.peak_waiting = 0
        self.skipped = 0  # records a replay re-read that the committed progress lists done
        self.answered: queue.SimpleQueue[_Answered] = queue.SimpleQueue()
        self.ready: list[_Work] = []  # lane heads to start (their head was revoked)
        self.spread: set[TopicPart] = set()  # paused: progress spans too far
        self.users: Counter[int] = Counter()  # taken records per handler (by id)
        self.retired: list[StartingHandler] = []
        # Records whose outputs the producer refused (their transaction was aborted): when
        # they come again, dead-lettered with that error instead of run.
        self.unwritable: dict[tuple[TopicPart, int], str] = {}
        # (processed, dead-lettered, produced) when the metrics were last told (``_report``).
        self.reported = (0, 0, 0)

    # -- taking records -----------------------------------------------------------

    def process(self, messages: list[Message], stop: threading.Event | None = None) -> None:
        for msg in messages:
            tp = (msg.topic() or "", msg.partition() or 0)
            if tp in self.held or self._hold_if_not_due(msg):
                continue  # rewound: this partition's records come again once due
            offset = msg.offset() or 0
            if not self._progress(tp, offset).take(offset):
                self.skipped += 1  # finished before a crash: its outputs are committed
                self.changed.add(tp)
                continue
            key = msg.key() or f"{tp[0]}:{tp[1]}:{offset}".encode()
            work = _Work(msg, tp, offset, key, self.handler)
            self.taken += 1
            self.users[id(work.handler)] += 1
            lane = self.lanes.get(key)
            if lane is not None:
                lane.append(work)  # behind the lead's record in flight
                continue
            self.lanes[key] = deque([work])
            if not self._run_lane(work):
                return  # recovered: everything unfinished is read again

    def _progress(self, tp: TopicPart, offset: int) -> PartitionProgress:
        """The partition's progress, read from its committed offset and metadata the first
        time a record of it comes (after an assignment or a rewind)."""
        found = self.progress.get(tp)
        if found is not None:
            return found
        [committed] = self._read_committed([TopicPartition(tp[0], tp[1])])
        if committed.offset >= 0:
            try:
                found = PartitionProgress.from_commit(committed.offset, committed.metadata)
            except MetadataError as exc:
                log.warning("commit metadata not ours, ignored", partition=tp, error=str(exc))
                found = PartitionProgress(committed.offset)
        else:
            found = PartitionProgress(offset)  # never committed: it starts where we do
        self.progress[tp] = found
        return found

    # -- running lanes ------------------------------------------------------------

    def _release_due(self) -> None:
        """Held retry partitions that are due resume, unless their progress spans too far
        (they resume with ``_pace_partitions``, once their lowest record is done)."""
        now = time.time() * 1000
        for tp in [tp for tp, at in self.held.items() if at <= now]:
            del self.held[tp]
            if tp not in self.spread:
                self.consumer.resume([TopicPartition(*tp)])

    def _run_lane(self, work: _Work | None) -> bool:
        """Start ``work`` (its lane's head), and each next record of the lane that finishes
        without a call. False if the transaction had to be recovered (all was reset)."""
        while work is not None:
            refused = self.unwritable.pop((work.tp, work.offset), None)
            if refused is not None:
                if not self._failed(work, _UnwritableError(refused)):
                    return False
                work = self._finish(work)
                continue
            try:
                started = work.handler.start(work.msg)
            except Exception as exc:  # judged in _failed
                if not self._failed(work, exc):
                    return False
            else:
                if isinstance(started, Waiting):
                    self._send(work, started)
                    return True
                if not self._write(work, started):
                    return False
            work = self._finish(work)
        return True

    def _send(self, work: _Work, waiting: Waiting) -> None:
        answered = self.answered

        def done(answers: list[Answer]) -> None:  # on the runner's thread
            answered.put(_Answered(work, waiting, answers))

        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        # A runner that refuses (closed) is not an answer: the record is unfinished and the
        # error ends the worker, whose successor runs it again.
        self.calls.start(waiting.calls, done, window_ms=waiting.window_ms)

    def _take_answers(self, block_s: float = 0.0) -> bool:
        """Write what the answers that came in decide; False if the transaction had to be
        recovered."""
        while True:
            try:
                got = self.answered.get(timeout=block_s) if block_s else self.answered.get_nowait()
            except queue.Empty:
                return True
            block_s = 0.0
            self.waiting -= 1
            work = got.work
            if not work.live:
                continue  # given up (aborted or revoked): its record runs again elsewhere
            try:
                started = got.waiting.resume(got.answers)
            except Exception as exc:  # judged in _failed
                if not self._failed(work, exc):
                    return False
            else:
                if isinstance(started, Waiting):
                    self._send(work, started)  # more calls (an auction's post after its pings)
                    continue
                if not self._write(work, started):
                    return False
            following = self._finish(work)
            if self.stop.is_set():
                continue  # stopping: what follows in the lane is the next owner's
            if not self._run_lane(following):
                return False

    def _write(self, work: _Work, records: list[Record]) -> bool:
        self._begin()
        try:
            self._produce(records)
        except Exception as exc:
            if transaction_broken(exc):
                self._recover(exc)
                return False
            # The record's own outputs cannot be written (too large for the topic): part of
            # them may be in the transaction, so it is aborted, and when the record comes again
            # it goes to the dead-letter topic instead of running.
            log.error("outputs of a record refused by the producer", error=str(exc))
            self.unwritable[(work.tp, work.offset)] = f"{type(exc).__name__}: {exc}"
            self._abort_and_rewind(self.stop)
            return False
        return True

    def _failed(self, work: _Work, exc: Exception) -> bool:
        """A record the step could not take: a transient failure resets the loop (False); a
        poison record or a bug on one lead is dead-lettered, and the lane goes on (True)."""
        if isinstance(exc, TransientStepError):
            log.warning("step cannot decide now, aborting and rewinding", error=str(exc))
            self._abort_and_rewind(self.stop)
            return False
        if transaction_broken(exc):
            self._recover(exc)
            return False
        if isinstance(exc, PoisonMessageError):
            error = f"PoisonMessage: {exc}"
        else:
            log.error("step failed on a record", exc_info=exc)
            error = (
                f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc, limit=3))}"
            )
        self._begin()
        try:
            self._dead_letter(work.msg, error)
        except Exception as dlq_exc:
            if not transaction_broken(dlq_exc):
                raise
            self._recover(dlq_exc)
            return False
        return True

    def _finish(self, work: _Work) -> _Work | None:
        """``work``'s outputs are written: it is done in this transaction. The next record of
        its lane, if any."""
        progress = self.progress.get(work.tp)
        if progress is not None:
            progress.finish(work.offset)
            self.changed.add(work.tp)
        self.processed += 1
        self.transient_failures = 0
        self._release(work)
        lane = self.lanes.get(work.lane)
        if lane is None:
            return None
        if lane and lane[0] is work:
            lane.popleft()
        if not lane:
            del self.lanes[work.lane]
            return None
        return lane[0]

    def _report(self) -> None:
        """What finished since the last turn, to the metrics as the one-at-a-time loop reports
        a batch: records in by outcome, records out by target, dead letters. Records finish
        out of fetch order here, so they are counted when they finish, once per turn."""
        handled = self.processed - self.reported[0]
        dead = self.dead_lettered - self.reported[1]
        produced = self.produced - self.reported[2]
        if not (handled or produced):
            return
        metrics = self.metrics
        metrics.records_in(self.input_topic, "processed", handled - dead)
        metrics.records_in(self.input_topic, "dead_lettered", dead)
        elsewhere = sum(self.produced_to.values())
        metrics.records_out(self.output_topic, produced - elsewhere)
        for topic, count in self.produced_to.items():
            metrics.records_out(topic, count)
        metrics.records_out(self.dlq_topic, dead)
        metrics.dead_letters(self.dlq_topic, dead + self.produced_to.get(self.dlq_topic, 0))
        self.produced_to.clear()
        self.reported = (self.processed, self.dead_lettered, self.produced)

    def _release(self, work: _Work) -> None:
        self.taken -= 1
        self.users[id(work.handler)] -= 1

    # -- transactions -------------------------------------------------------------

    def _offsets(self) -> list[TopicPartition]:
        offsets = []
        for tp in self.changed:
            progress = self.progress.get(tp)
            if progress is not None:
                base, metadata = progress.commit()
                offsets.append(TopicPartition(tp[0], tp[1], base, metadata=metadata))
        return offsets

    def _committed(self) -> None:
        self.changed.clear()

    def _forget(self, works: Sequence[_Work]) -> None:
        for work in works:
            work.live = False
            self._release(work)

    def _rewind(self) -> None:
        """Back to the committed offsets and progress: every record not finished in a
        committed transaction runs again, and answers to calls started before are dropped."""
        for lane in self.lanes.values():
            self._forget(lane)
        self.lanes.clear()
        self.ready.clear()
        self.changed.clear()
        self.progress.clear()
        unheld = [TopicPartition(t, p) for t, p in self.spread if (t, p) not in self.held]
        if unheld:
            self.consumer.resume(unheld)
        self.spread.clear()
        for tp in self._read_committed(self.consumer.assignment()):
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                try:
                    self.progress[key] = PartitionProgress.from_commit(tp.offset, tp.metadata)
                except MetadataError:
                    self.progress[key] = PartitionProgress(tp.offset)
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super().on_revoke(consumer, partitions)  # commits what is finished
        self._give_up({(tp.topic, tp.partition) for tp in partitions})

    def _on_lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        if self.in_txn:
            log.warning("partitions lost, aborting", partitions=len(partitions))
            self._abort()
        self._rewind()
        # Another member may commit further before they come back: their progress is read
        # again then, and nothing of theirs stays held or paused here.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._give_up(lost)
        for tp in lost:
            self.held.pop(tp, None)

    def _give_up(self, parts: set[TopicPart]) -> None:
        """Partitions that moved to another member: their unfinished records are theirs now."""
        for tp in parts:
            self.progress.pop(tp, None)
            self.changed.discard(tp)
            self.spread.discard(tp)
        for key, lane in list(self.lanes.items()):
            gone = [w for w in lane if w.tp in parts]
            if not gone:
                continue
            head = lane[0]
            self._forget(gone)
            kept = deque(w for w in lane if w.tp not in parts)
            if kept:
                self.lanes[key] = kept
                if head.tp in parts:
                    self.ready.append(kept[0])  # its head went: it may start now
            else:
                del self.lanes[key]

    # -- the loop -----------------------------------------------------------------

    def _room(self) -> int:
        return max(0, self.max_in_flight - self.taken)

    def _pace_partitions(self) -> None:
        """Pause a partition whose finished offsets spread too far for the commit metadata
        (one record far behind the rest), resume it once its lowest record is done."""
        limit = MAX_SPAN - self.batch_size
        for tp, progress in self.progress.items():
            if progress.span >= limit and tp not in self.spread:
                self.spread.add(tp)
                self.consumer.pause([TopicPartition(*tp)])
            elif progress.span < limit // 2 and tp in self.spread:
                self.spread.discard(tp)
                if tp not in self.held:  # a held retry partition resumes when it is due
                    self.consumer.resume([TopicPartition(*tp)])

    def _step(self) -> None:
        """One turn: answers in, ready lanes started, new records taken, a commit when due."""
        if not self._take_answers():
            return
        ready, self.ready = self.ready, []
        for work in ready:
            if work.live and not self._run_lane(work):
                return
        self._pace_partitions()
        room = self._room()
        messages: list[Message] = []
        if room == 0:
            # Full: wait for an answer instead of records (nothing is fetched meanwhile).
            if not self._take_answers(block_s=self._wait() or ANSWER_POLL_S):
                return
        else:
            # With calls out, what is already fetched is taken without blocking, and the
            # wait is on the answers (woken by the first): an answer is written at once, a
            # record waits at most ANSWER_POLL_S.
            wait = 0.0 if self.waiting else self._wait()
            messages = self._fetch(wait, min(room, self.batch_size))
            if not messages and self.waiting:
                block = min(self._wait(), ANSWER_POLL_S)
                if not self._take_answers(block_s=block or 0.0):
                    return
            if messages:
                started = time.monotonic()
                self.process(messages)
                self.metrics.batch(len(messages), time.monotonic() - started)
        self._report()
        self.metrics.sample_lag(self.consumer)
        if self.in_txn:
            age = time.monotonic() - self.txn_started
            drained = len(messages) < min(room, self.batch_size) or room == 0
            if age >= self.commit_interval or (drained and age >= self.linger):
                self._commit()
        self._close_retired()

    def run(self, stop: threading.Event) -> None:
        self.stop = stop
        self._retrying("init_transactions", self.producer.init_transactions)
        topics = [self.input_topic] + ([self.retry_topic] if self.retry_topic else [])
        self.consumer.subscribe(topics, on_revoke=self.on_revoke, on_lost=self._on_lost)
        clean = False
        try:
            while not stop.is_set():
                self._follow_flow_changes()
                self._release_due()
                self._step()
            self._drain()
            clean = True
        finally:
            # An error on its way out may have left part of a record's outputs in the open
            # transaction: only a clean stop commits it.
            if clean:
                self._commit()
            elif self.in_txn:
                try:
                    self.producer.abort_transaction(10)
                except Exception:  # the process is ending anyway: its successor fences it
                    log.warning("abort on the way out failed", exc_info=True)
            self.consumer.close()
            self.producer.flush(10)
            self.handler.close()
            for handler in self.retired:
                handler.close()

    def _drain(self) -> None:
        """On stop: take no more records, write the answers that come within the grace
        period; what is still out then runs again under the next owner."""
        until = time.monotonic() + self.stop_grace
        while self.waiting and time.monotonic() < until:
            if not self._take_answers(block_s=min(0.05, max(0.001, until - time.monotonic()))):
                return
        if self.waiting:
            log.info("stopping with calls out; their records run again", waiting=self.waiting)

    def _follow_flow_changes(self) -> None:
        """A newer flow version: records taken from now on start under its handler; the old
        one is closed once no record taken under it is unfinished."""
        if self.watch is None or time.monotonic() - self.watched_at < self.watch_interval:
            return
        self.watched_at = time.monotonic()
        new = self.watch()
        if new is not None:
            self._commit()
            self.retired.append(self.handler)
            self.handler = new  # type: ignore[assignment]
            log.info("flow definition updated")

    def _close_retired(self) -> None:
        for handler in [h for h in self.retired if self.users[id(h)] <= 0]:
            handler.close()
            self.retired.remove(handler)
            del self.users[id(handler)]
