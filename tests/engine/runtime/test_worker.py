"""The step loop's reaction to what the consumer reports, without a broker."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from engine.runtime.kafka import is_fatal
from engine.runtime.worker import TransactionalStepLoop

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
