"""The step loop's reaction to what the consumer and the producer report, without a broker."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from engine.runtime import step_loop
from engine.runtime.handlers import PoisonMessageError, Record
from engine.runtime.kafka.config import is_fatal
from engine.runtime.step_loop import TransactionalStepLoop
from tests.engine.runtime.kafka.fakes import BufferedConsumer, FakeMessage, names, records

FENCED = KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer")


class ErrorMessage:
    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error


def loop() -> TransactionalStepLoop:
    nothing: Any = None  # never reached: an error record is looked at before any I/O
    return TransactionalStepLoop(nothing, nothing, nothing, "in", "out", "dlq")


def test_a_fenced_static_member_is_fatal_though_librdkafka_does_not_flag_it() -> None:
    assert not FENCED.fatal()
    assert is_fatal(FENCED)
    assert not is_fatal(KafkaError(KafkaError._PARTITION_EOF))
    assert not is_fatal(KafkaError(KafkaError._TRANSPORT))


def test_a_fenced_step_ends_its_process_instead_of_consuming_nothing_while_alive() -> None:
    # Found by make chaos (the streamer's twin of this): a live process whose consumer
    # was fenced only logged warnings, so its supervisor never restarted it.
    message: Any = ErrorMessage(FENCED)
    with pytest.raises(KafkaException):
        loop().process([message])


def test_a_transient_consume_error_is_logged_and_the_batch_goes_on() -> None:
    transient: Any = ErrorMessage(KafkaError(KafkaError._TRANSPORT, "broker down"))
    step = loop()
    step.process([transient])
    assert step.processed == 0


def step_reading(consumer: BufferedConsumer) -> TransactionalStepLoop:
    nothing: Any = None
    fake: Any = consumer
    return TransactionalStepLoop(fake, nothing, nothing, "in", "out", "dlq", batch_size=3)


def test_a_fetch_takes_what_is_buffered_without_waiting() -> None:
    consumer = BufferedConsumer(records("a", "b", "c", "d"), [])
    assert names(step_reading(consumer)._fetch(0.1)) == ["a", "b", "c"]
    assert consumer.waits == []


def test_a_quiet_step_wakes_at_the_first_record_and_takes_what_came_with_it() -> None:
    # consume(n, timeout) would have waited the whole timeout for a full batch: on a
    # quiet flow, that wait was on every lead's latency at every step.
    consumer = BufferedConsumer([], records("a", "b"))
    assert names(step_reading(consumer)._fetch(0.1)) == ["a", "b"]
    assert consumer.waits == [0.1]


def test_an_open_transaction_waits_only_for_the_rest_of_its_linger() -> None:
    step = step_reading(BufferedConsumer([], []))
    assert step._wait() == step.idle_wait
    step.in_txn, step.txn_started = True, time.monotonic()
    assert 0 < step._wait() <= step.linger
    step.txn_started -= 1.0
    assert step._wait() == 0.0


def test_the_fetch_hands_the_loop_records_only_and_ends_it_when_fenced() -> None:
    # The triage is the kit's: an error message never reaches process(), a fatal one
    # raises from the fetch itself.
    eof = FakeMessage("eof", error=KafkaError(KafkaError._PARTITION_EOF))
    consumer = BufferedConsumer([FakeMessage("a"), eof, FakeMessage("b")], [])
    assert names(step_reading(consumer)._fetch(0.1)) == ["a", "b"]
    fenced = BufferedConsumer([FakeMessage("a"), FakeMessage(error=FENCED)], [])
    with pytest.raises(KafkaException):
        step_reading(fenced)._fetch(0.1)


# -- a broker going away: abort, rewind, back off and go on; only fatal errors end it --------

TIMED_OUT = KafkaError(
    KafkaError._TIMED_OUT, "Transactional API operation timed out", retriable=True
)
MESSAGES_TIMED_OUT = KafkaError(
    KafkaError._MSG_TIMED_OUT, "3 message(s) timed out on out [1]", txn_requires_abort=True
)
PRODUCER_FENCED = KafkaError(KafkaError._FENCED, "Producer fenced by newer instance", fatal=True)
NOT_IN_TRANSACTION = KafkaError(
    KafkaError._STATE, "Producing not allowed in transactional state AbortableError"
)


class FakeProducer:
    """A transactional producer whose calls fail as scripted: ``fail[name]`` is the errors
    the next calls of ``name`` raise, one per call, before it succeeds."""

    def __init__(self, **fail: list[KafkaError]) -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.produced: list[tuple[str, bytes | None]] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        errors = self.fail.get(name)
        if errors:
            raise KafkaException(errors.pop(0))

    def init_transactions(self) -> None:
        self._call("init_transactions")

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], metadata: Any) -> None:
        self._call("send_offsets_to_transaction")

    def commit_transaction(self) -> None:
        self._call("commit_transaction")

    def abort_transaction(self) -> None:
        self._call("abort_transaction")

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **_: Any) -> None:
        self._call(f"produce:{topic}")
        self.produced.append((topic, value))

    def flush(self, timeout: float) -> int:
        return 0


class FakeConsumer:
    """Assigned partition 0 of ``in``, committed at offset 5; ``committed`` fails as scripted."""

    def __init__(self, committed_errors: list[KafkaError] | None = None) -> None:
        self.committed_errors = committed_errors or []
        self.seeks: list[tuple[str, int, int]] = []
        self.closed = False

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("in", 0)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.committed_errors:
            raise KafkaException(self.committed_errors.pop(0))
        return [TopicPartition(tp.topic, tp.partition, 5) for tp in partitions]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def subscribe(self, topics: list[str], **_: Any) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Input:
    """A record of partition 0 of ``in``."""

    def __init__(self, offset: int, value: bytes = b"lead") -> None:
        self._offset, self._value = offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"lead-id"

    def headers(self) -> list[tuple[str, bytes]]:
        return []


class Forward:
    """The step's decision: one output record per input (or ``error`` raised)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def handle(self, msg: Any) -> list[Record]:
        if self.error is not None:
            raise self.error
        return [Record(key=msg.key(), value=msg.value(), headers=[])]

    def close(self) -> None:
        pass


class RecordingStop(threading.Event):
    """The worker's stop event, remembering how long each backoff asked to wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return False


@pytest.fixture(autouse=True)
def no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries back off with ``time.sleep``: recorded here instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(step_loop.time, "sleep", slept.append)
    return slept


def step_with(
    producer: FakeProducer, consumer: FakeConsumer | None = None, handler: Forward | None = None
) -> TransactionalStepLoop:
    fakes: Any = (consumer or FakeConsumer(), producer, handler or Forward())
    step = TransactionalStepLoop(*fakes, "in", "out", "dlq")
    step.stop = RecordingStop()
    return step


def open_transaction(step: TransactionalStepLoop) -> None:
    step._begin()
    step.pending[("in", 0)] = 8


def test_a_commit_whose_messages_timed_out_is_aborted_rewound_and_backed_off() -> None:
    # A broker killed with the transaction's messages in flight: librdkafka fails the
    # commit with an abortable error. The loop aborts, goes back to the committed offset
    # (5, not 8: the aborted records are read again) and waits before the next attempt.
    producer = FakeProducer(commit_transaction=[MESSAGES_TIMED_OUT])
    consumer = FakeConsumer()
    step = step_with(producer, consumer)
    open_transaction(step)
    assert step._commit() is False
    assert producer.calls[-2:] == ["commit_transaction", "abort_transaction"]
    assert consumer.seeks == [("in", 0, 5)]
    assert not step.in_txn and step.pending == {}
    assert isinstance(step.stop, RecordingStop) and step.stop.waits and step.stop.waits[0] > 0


def test_an_abort_that_times_out_while_the_coordinator_moves_is_called_again() -> None:
    # After a commit that waited out the transaction timeout the abort has no time left
    # and times out at once: a retriable error, not a reason to exit.
    producer = FakeProducer(
        commit_transaction=[MESSAGES_TIMED_OUT], abort_transaction=[TIMED_OUT, TIMED_OUT]
    )
    consumer = FakeConsumer()
    step = step_with(producer, consumer)
    open_transaction(step)
    assert step._commit() is False
    assert producer.calls.count("abort_transaction") == 3
    assert consumer.seeks == [("in", 0, 5)]


def test_a_commit_that_times_out_is_resumed_not_aborted(no_real_sleep: list[float]) -> None:
    # librdkafka carries on with a timed-out commit and wants the same call again (an
    # abort meanwhile answers _CONFLICT); once it goes through, nothing is redone.
    producer = FakeProducer(commit_transaction=[TIMED_OUT, TIMED_OUT, TIMED_OUT])
    consumer = FakeConsumer()
    step = step_with(producer, consumer)
    open_transaction(step)
    assert step._commit() is True
    assert producer.calls.count("commit_transaction") == 4
    assert "abort_transaction" not in producer.calls
    assert consumer.seeks == []
    assert len(no_real_sleep) == 3 and all(s > 0 for s in no_real_sleep)


def test_a_commit_that_times_out_and_then_fails_is_aborted() -> None:
    producer = FakeProducer(commit_transaction=[TIMED_OUT, MESSAGES_TIMED_OUT])
    consumer = FakeConsumer()
    step = step_with(producer, consumer)
    open_transaction(step)
    assert step._commit() is False
    assert producer.calls[-3:] == ["commit_transaction", "commit_transaction", "abort_transaction"]
    assert consumer.seeks == [("in", 0, 5)]


def test_offsets_the_coordinator_cannot_take_now_are_sent_again() -> None:
    producer = FakeProducer(send_offsets_to_transaction=[TIMED_OUT])
    step = step_with(producer)
    open_transaction(step)
    assert step._commit() is True
    assert producer.calls[-3:] == [
        "send_offsets_to_transaction",
        "send_offsets_to_transaction",
        "commit_transaction",
    ]


def test_committed_offsets_are_asked_again_until_the_group_coordinator_answers() -> None:
    # Reading on from the current position instead would skip the aborted records.
    producer = FakeProducer(commit_transaction=[MESSAGES_TIMED_OUT])
    consumer = FakeConsumer(committed_errors=[KafkaError(KafkaError._TIMED_OUT)] * 2)
    step = step_with(producer, consumer)
    open_transaction(step)
    assert step._commit() is False
    assert consumer.seeks == [("in", 0, 5)]


def test_a_fenced_producer_ends_the_process_at_commit() -> None:
    step = step_with(FakeProducer(commit_transaction=[PRODUCER_FENCED]))
    open_transaction(step)
    with pytest.raises(KafkaException) as raised:
        step._commit()
    assert raised.value.args[0] is PRODUCER_FENCED


def test_a_fatal_error_while_aborting_ends_the_process() -> None:
    producer = FakeProducer(
        commit_transaction=[MESSAGES_TIMED_OUT], abort_transaction=[PRODUCER_FENCED]
    )
    step = step_with(producer)
    open_transaction(step)
    with pytest.raises(KafkaException):
        step._commit()


def test_a_record_the_producer_refuses_mid_transaction_is_redone_not_dead_lettered() -> None:
    # The transaction failed in the background (abortable-error state): produce answers
    # _STATE. The record is fine; the batch is aborted and read again from offset 5.
    producer = FakeProducer(**{"produce:out": [NOT_IN_TRANSACTION]})
    consumer = FakeConsumer()
    step = step_with(producer, consumer)
    messages: Any = [Input(5), Input(6)]
    step.process(messages)
    assert step.dead_lettered == 0 and step.processed == 0
    assert not any(topic == "dlq" for topic, _ in producer.produced)
    assert "abort_transaction" in producer.calls
    assert consumer.seeks == [("in", 0, 5)]
    assert producer.calls.count("produce:out") == 1  # the rest of the batch waits for the re-read


def test_a_dead_letter_the_producer_refuses_mid_transaction_is_redone_too() -> None:
    producer = FakeProducer(**{"produce:dlq": [NOT_IN_TRANSACTION]})
    consumer = FakeConsumer()
    step = step_with(producer, consumer, Forward(PoisonMessageError("unknown fingerprint")))
    messages: Any = [Input(5)]
    step.process(messages)
    assert step.dead_lettered == 0 and step.processed == 0
    assert "abort_transaction" in producer.calls
    assert consumer.seeks == [("in", 0, 5)]


def test_a_fenced_producer_ends_the_process_when_producing() -> None:
    producer = FakeProducer(**{"produce:out": [PRODUCER_FENCED]})
    step = step_with(producer)
    messages: Any = [Input(5)]
    with pytest.raises(KafkaException):
        step.process(messages)


def test_a_record_too_large_for_the_topic_is_still_the_records_own_and_dead_lettered() -> None:
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large")
    producer = FakeProducer(**{"produce:out": [too_large]})
    step = step_with(producer)
    messages: Any = [Input(5, b"x" * 10)]
    step.process(messages)
    assert step.dead_lettered == 1 and step.processed == 1
    assert producer.produced == [("dlq", b"x" * 10)]
    assert "abort_transaction" not in producer.calls


def test_a_worker_started_while_the_coordinator_is_away_waits_for_it() -> None:
    producer = FakeProducer(init_transactions=[TIMED_OUT, TIMED_OUT])
    consumer = FakeConsumer()
    step = step_with(producer, consumer)
    stop = threading.Event()
    stop.set()  # nothing to consume: start, then stop at once
    step.run(stop)
    assert producer.calls.count("init_transactions") == 3
    assert consumer.closed
