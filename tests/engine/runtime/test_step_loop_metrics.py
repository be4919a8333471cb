"""What the step loop reports per batch, and the dead letters it writes, without a broker."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from engine.runtime.handlers import PoisonMessageError, Record
from engine.runtime.kafka.dead_letter import (
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from engine.runtime.kafka.metrics import REGISTRY, WorkerMetrics
from engine.runtime.step_loop import TransactionalStepLoop
from engine.topics import ERROR_HEADER
from tests.engine.runtime.kafka.fakes import FakeMessage


class Producing:
    """A transactional producer that only remembers what it was given."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, Any, Any, Any]] = []

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: Any, key: Any, headers: Any = None) -> None:
        self.produced.append((topic, value, key, headers))


class Handler:
    """One event per record, a retry record for "retry", poison for "bad"."""

    def handle(self, msg: Any) -> list[Record]:
        if msg.name == "bad":
            raise PoisonMessageError("not an event")
        if msg.name == "retry":
            return [Record(b"k", b"again", [], "in.retry")]
        return [Record(b"k", b"event", [])]

    def close(self) -> None:
        pass


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_batch_reports_records_in_by_outcome_out_by_topic_and_its_dead_letters() -> None:
    role = f"step:test:{uuid.uuid4().hex[:8]}"
    producer = Producing()
    nothing: Any = None
    fake: Any = producer
    loop = TransactionalStepLoop(
        nothing, fake, Handler(), "in", "out", "dlq", commit_interval_ms=60_000,
        metrics=WorkerMetrics(role),
    )  # fmt: skip
    batch: Any = [
        FakeMessage("a", topic="in", offset=1),
        FakeMessage("bad", topic="in", offset=2, value=None),
        FakeMessage("retry", topic="in", offset=3),
        FakeMessage("b", topic="in", offset=4),
    ]

    loop._process_metered(batch, threading.Event())

    def records_in(outcome: str) -> float | None:
        return sample("leadflow_worker_records_in_total", role=role, topic="in", outcome=outcome)

    def records_out(target: str) -> float | None:
        return sample("leadflow_worker_records_out_total", role=role, target=target)

    assert records_in("processed") == 3
    assert records_in("dead_lettered") == 1
    assert records_in("requeued") is None
    assert (records_out("out"), records_out("in.retry"), records_out("dlq")) == (2, 1, 1)
    assert sample("leadflow_worker_dead_letters_total", role=role, target="dlq") == 1
    assert sample("leadflow_worker_batch_records_sum", role=role) == 4

    # The poison record as it was (a null value stays null), with where it came from.
    [(topic, value, key, headers)] = [p for p in producer.produced if p[0] == "dlq"]
    assert (topic, value, key) == ("dlq", None, b"k")
    found = dict(headers)
    assert found[ERROR_HEADER].startswith(b"PoisonMessage: not an event")
    assert found[SOURCE_TOPIC_HEADER] == b"in"
    assert (found[SOURCE_PARTITION_HEADER], found[SOURCE_OFFSET_HEADER]) == (b"0", b"2")
