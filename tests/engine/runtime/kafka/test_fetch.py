"""The kit's fetch and consume-error triage, without a broker: what every consumer loop gets."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from structlog.testing import capture_logs

from engine.runtime.kafka.fetch import REPEAT_LOG_S, ConsumeErrors, fetch
from tests.engine.runtime.kafka.fakes import BufferedConsumer, FakeMessage, names, records

FENCED = KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer")
TRANSPORT = KafkaError(KafkaError._TRANSPORT, "broker down")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_fetch_takes_what_is_buffered_without_waiting() -> None:
    consumer = BufferedConsumer(records("a", "b", "c", "d"), [])
    assert names(fetch(consumer, 3, 0.1, ConsumeErrors())) == ["a", "b", "c"]
    assert consumer.waits == []


def test_a_quiet_consumer_wakes_at_the_first_record_and_takes_what_came_with_it() -> None:
    consumer = BufferedConsumer([], records("a", "b"))
    assert names(fetch(consumer, 3, 0.1, ConsumeErrors())) == ["a", "b"]
    assert consumer.waits == [0.1]


def test_a_batch_of_one_never_asks_librdkafka_for_zero_more() -> None:
    consumer = BufferedConsumer([], records("a", "b"))
    assert names(fetch(consumer, 1, 0.1, ConsumeErrors())) == ["a"]


def test_nothing_within_the_wait_is_an_empty_batch() -> None:
    assert fetch(BufferedConsumer([], []), 3, 0.1, ConsumeErrors()) == []


def test_a_fatal_error_raises_even_when_librdkafka_does_not_flag_it_fatal() -> None:
    # A static member fenced by its own instance id: found by make chaos, where a loop
    # that only logged it kept a live process that consumed nothing.
    assert not FENCED.fatal()
    messages: Any = [FakeMessage("a"), FakeMessage(error=FENCED)]
    with pytest.raises(KafkaException) as raised:
        ConsumeErrors().triage(messages)
    assert raised.value.args[0].code() == KafkaError._FATAL


def test_a_partition_end_is_reported_with_its_offset_and_not_returned() -> None:
    ends: list[tuple[str, int, int]] = []
    end = KafkaError(KafkaError._PARTITION_EOF)
    eof = FakeMessage(topic="x", partition=2, offset=41, error=end)
    messages: Any = [FakeMessage("a"), eof, FakeMessage("b")]
    kept = ConsumeErrors().triage(messages, lambda t, p, o: ends.append((t, p, o)))
    assert names(kept) == ["a", "b"]
    assert ends == [("x", 2, 41)]


def test_a_partition_end_nobody_asked_for_is_dropped_silently() -> None:
    messages: Any = [FakeMessage(error=KafkaError(KafkaError._PARTITION_EOF))]
    with capture_logs() as logs:
        assert ConsumeErrors().triage(messages) == []
    assert logs == []


def test_transient_errors_are_counted_each_time_and_logged_once_per_kind_per_window() -> None:
    counted: list[str] = []
    clock = Clock()
    errors = ConsumeErrors("step", counted.append, clock)
    outage: Any = [FakeMessage(error=TRANSPORT) for _ in range(5)]
    other: Any = [FakeMessage(error=KafkaError(KafkaError._ALL_BROKERS_DOWN, "all down"))]
    with capture_logs() as logs:
        assert errors.triage(outage) == []
        assert errors.triage(other) == []
        clock.now += REPEAT_LOG_S
        errors.triage(outage[:1])
    assert counted == ["_TRANSPORT"] * 5 + ["_ALL_BROKERS_DOWN", "_TRANSPORT"]
    assert [(e["code"], e["since_last_logged"]) for e in logs] == [
        ("_TRANSPORT", 0),
        ("_ALL_BROKERS_DOWN", 0),
        ("_TRANSPORT", 4),
    ]
    assert all(e["consumer"] == "step" and e["log_level"] == "warning" for e in logs)


def test_a_batch_without_errors_is_returned_as_it_is() -> None:
    # The hot path: no copy of a step's batch.
    messages: Any = records("a", "b")
    assert ConsumeErrors().triage(messages) is messages


class FillingConsumer:
    """Records how it was asked: a batch that may wait for all of its records."""

    def __init__(self, batch: list[Any]) -> None:
        self.batch, self.asked = batch, list[tuple[int, float]]()

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        self.asked.append((num_messages, timeout))
        return self.batch

    def poll(self, timeout: float = -1) -> Any:
        raise AssertionError("a filling fetch waits in consume, not for the first record")


def test_a_filling_fetch_waits_for_a_full_batch_and_still_triages_it() -> None:
    # A streamer's round or a rebuild's batch: one bigger batch is worth the wait.
    consumer = FillingConsumer([FakeMessage("a"), FakeMessage(error=TRANSPORT), FakeMessage("b")])
    assert names(fetch(consumer, 3, 0.5, ConsumeErrors(), fill=True)) == ["a", "b"]
    assert consumer.asked == [(3, 0.5)]
