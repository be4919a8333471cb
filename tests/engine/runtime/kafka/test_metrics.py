"""The workers' metrics, without a broker: what a batch, a commit, an abort and lag record."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from engine.errors import TransientStepError
from engine.runtime.kafka.metrics import REGISTRY, WorkerMetrics
from engine.runtime.kafka.transaction import NO_EXCEPTION, abort_cause


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def role() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


def test_a_batch_records_its_size_time_and_what_became_of_its_records() -> None:
    metrics = WorkerMetrics(name := role())
    metrics.batch(3, 0.002)
    metrics.records_in("in", "processed", 2)
    metrics.records_in("in", "dead_lettered", 1)
    metrics.records_in("in", "requeued", 0)  # nothing: no series
    metrics.records_out("out", 4)
    metrics.dead_letters("dlq", 1)

    assert sample("leadflow_worker_batch_records_count", role=name) == 1
    assert sample("leadflow_worker_batch_records_sum", role=name) == 3
    assert sample("leadflow_worker_batch_seconds_sum", role=name) == 0.002
    assert (
        sample("leadflow_worker_records_in_total", role=name, topic="in", outcome="processed") == 2
    )
    assert (
        sample("leadflow_worker_records_in_total", role=name, topic="in", outcome="dead_lettered")
        == 1
    )
    assert (
        sample("leadflow_worker_records_in_total", role=name, topic="in", outcome="requeued")
        is None
    )
    assert sample("leadflow_worker_records_out_total", role=name, target="out") == 4
    assert sample("leadflow_worker_dead_letters_total", role=name, target="dlq") == 1


def test_commits_are_timed_and_aborts_counted_by_cause() -> None:
    metrics = WorkerMetrics(name := role())
    metrics.transaction_committed(0.01)
    metrics.committed(0.03)
    metrics.transaction_aborted("TransientStepError")
    metrics.transaction_aborted("TransientStepError")
    metrics.consume_error("_TRANSPORT")

    assert sample("leadflow_worker_commit_seconds_count", role=name) == 2
    assert sample("leadflow_worker_commit_seconds_sum", role=name) == 0.04
    cause = "TransientStepError"
    assert sample("leadflow_worker_transaction_aborts_total", role=name, cause=cause) == 2
    assert sample("leadflow_worker_consume_errors_total", role=name, error="_TRANSPORT") == 1


def test_the_cause_of_an_abort_is_the_error_being_handled() -> None:
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "fenced"))
    assert abort_cause(fenced) == "kafka:_FENCED"
    assert abort_cause(TransientStepError("postgres away")) == "TransientStepError"
    assert abort_cause(None) == NO_EXCEPTION


class AssignedConsumer:
    """Positions and the high watermarks of the last fetch, as a consumer knows them."""

    def __init__(self, positions: dict[tuple[str, int], int], highs: dict[tuple[str, int], int]):
        self.positions, self.highs = positions, highs

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.positions]

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)])
            for tp in parts
        ]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        assert cached, "sampling lag must not ask the broker"
        return 0, self.highs.get((tp.topic, tp.partition), -1001)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lag_is_sampled_per_partition_at_most_every_interval_and_forgotten_when_revoked() -> None:
    clock = Clock()
    metrics = WorkerMetrics(name := role(), lag_every_s=5.0, clock=clock)
    consumer: Any = AssignedConsumer(
        {("a", 0): 7, ("a", 1): 3, ("a", 2): -1001}, {("a", 0): 10, ("a", 1): 3}
    )

    metrics.sample_lag(consumer)
    lag = "leadflow_worker_consumer_lag_records"
    assert sample(lag, role=name, topic="a", partition="0") == 3
    assert sample(lag, role=name, topic="a", partition="1") == 0
    assert sample(lag, role=name, topic="a", partition="2") is None  # nothing fetched yet

    consumer.positions = {("a", 1): 3}
    consumer.highs = {("a", 1): 5}
    metrics.sample_lag(consumer)  # too soon: unchanged
    assert sample(lag, role=name, topic="a", partition="1") == 0
    clock.now += 5.0
    metrics.sample_lag(consumer)
    assert sample(lag, role=name, topic="a", partition="1") == 2
    assert sample(lag, role=name, topic="a", partition="0") is None  # revoked
