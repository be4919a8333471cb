"""The step loop's reaction to what the consumer reports, without a broker."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

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
