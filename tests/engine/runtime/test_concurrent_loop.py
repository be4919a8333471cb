"""The concurrent step loop's bookkeeping: lanes per lead, progress past unfinished records,
answers that come after an abort, and its bounds. No broker: a fake consumer and producer
record what the loop asks of Kafka, and a manual runner answers calls in the order a test
chooses (``tests/engine/runtime/test_concurrent_delivery.py`` runs it on the real stack)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from engine.errors import FlowConfigError
from engine.flows import parse_flow
from engine.runtime.concurrent_loop import ConcurrentStepLoop
from engine.runtime.handlers import PoisonMessageError, Record
from engine.runtime.handlers.base import Started, Waiting
from engine.runtime.kafka.metrics import REGISTRY, WorkerMetrics
from engine.runtime.kafka.progress import encode_done
from engine.runtime.step_worker import check_call_deadline
from engine.settings import Settings
from engine.steps.calls import Answer, Call, Delivery
from tests.engine.runtime.kafka.fakes import FakeMessage


class Producer:
    """A transactional producer that records what is produced and committed."""

    def __init__(self) -> None:
        self.in_txn = False
        self.open: list[bytes] = []  # produced in the open transaction
        self.outputs: list[bytes] = []  # produced in committed transactions
        self.commits: list[list[tuple[int, int, str | None]]] = []
        self.aborts = 0
        self._offsets: list[tuple[int, int, str | None]] = []

    def init_transactions(self) -> None:
        pass

    def begin_transaction(self) -> None:
        assert not self.in_txn
        self.in_txn = True

    def produce(self, topic: str, value: bytes, key: bytes | None, **_: Any) -> None:
        assert self.in_txn, "produced outside a transaction"
        self.open.append(value)

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], _: Any) -> None:
        self._offsets = [(tp.partition, tp.offset, tp.metadata) for tp in offsets]

    def commit_transaction(self) -> None:
        self.outputs += self.open
        self.commits.append(sorted(self._offsets))
        self.open, self._offsets, self.in_txn = [], [], False

    def abort_transaction(self) -> None:
        self.open, self._offsets, self.in_txn = [], [], False
        self.aborts += 1

    def flush(self, timeout: float) -> int:
        return 0


class Consumer:
    """Partitions 0 and 1 of ``in``, with the committed offsets and metadata a test sets."""

    def __init__(self, committed: dict[int, tuple[int, str]] | None = None) -> None:
        self.committed_at = committed or {}
        self.seeks: list[tuple[int, int]] = []
        self.paused: set[int] = set()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("in", 0), TopicPartition("in", 1)]

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        out = []
        for tp in parts:
            offset, metadata = self.committed_at.get(tp.partition, (-1001, ""))
            out.append(TopicPartition(tp.topic, tp.partition, offset, metadata=metadata))
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def pause(self, parts: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in parts}

    def resume(self, parts: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in parts}

    def consumer_group_metadata(self) -> str:
        return "group"


class ManualRunner:
    """Holds each started call until the test answers it."""

    def __init__(self) -> None:
        self.out: dict[str, Callable[[list[Answer]], None]] = {}
        self.started: list[str] = []

    def start(
        self, calls: list[Call], done: Callable[[list[Answer]], None], *, window_ms: int | None
    ) -> None:
        name = calls[0].service
        self.started.append(name)
        self.out[name] = done

    def answer(self, name: str) -> None:
        self.out.pop(name)([Answer(200, {}, name.encode())])


class Handler:
    """Each record asks for one call named by its value; its answer becomes one output."""

    def __init__(self) -> None:
        self.closed = False

    def start(self, msg: Message) -> Started:
        name = (msg.value() or b"").decode()
        if name.startswith("poison"):
            raise PoisonMessageError("not a lead")
        if name.startswith("sync"):
            return [Record(msg.key(), name.encode(), [])]
        call = Call(Delivery("http://buyer", {}, b""), 1000, name)

        def resume(answers: list[Answer]) -> list[Record]:
            return [Record(msg.key(), b"out:" + answers[0].body, [])]

        return Waiting([call], resume)

    def handle(self, msg: Message) -> list[Record]:
        raise AssertionError("the concurrent loop starts records, it never handles them whole")

    def close(self) -> None:
        self.closed = True


def record(name: str, lead: str, offset: int, partition: int = 0) -> Any:
    return FakeMessage(
        topic="in", partition=partition, offset=offset, key=lead.encode(), value=name.encode()
    )


def loop_with(
    consumer: Consumer | None = None, max_in_flight: int = 100
) -> tuple[ConcurrentStepLoop, Producer, ManualRunner]:
    producer, runner = Producer(), ManualRunner()
    loop = ConcurrentStepLoop(
        consumer or Consumer(),  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        Handler(),
        calls=runner,
        max_in_flight=max_in_flight,
        input_topic="in",
        output_topic="out",
        dlq_topic="dlq",
        commit_interval_ms=60_000,
    )
    return loop, producer, runner


def test_leads_run_side_by_side_and_a_late_answer_holds_back_only_the_committed_offset() -> None:
    loop, producer, runner = loop_with()
    loop.process([record("a", "lead-a", 0), record("b", "lead-b", 1), record("c", "lead-c", 2)])
    assert runner.started == ["a", "b", "c"]  # all three out at once
    runner.answer("b")
    runner.answer("c")
    loop._take_answers()
    loop._commit()
    assert producer.outputs == [b"out:b", b"out:c"]  # written without waiting for a
    # Offset 0 is still out: the commit says "from 0", and that 1 and 2 are done.
    assert producer.commits[-1] == [(0, 0, encode_done(0, {1, 2}))]
    runner.answer("a")
    loop._take_answers()
    loop._commit()
    assert producer.outputs == [b"out:b", b"out:c", b"out:a"]
    assert producer.commits[-1] == [(0, 3, "")]


def test_a_leads_next_record_waits_for_the_one_before_it() -> None:
    loop, producer, runner = loop_with()
    loop.process([record("first", "lead-a", 0), record("other", "lead-b", 1)])
    loop.process([record("second", "lead-a", 2)])
    assert runner.started == ["first", "other"]  # "second" queues behind "first"
    runner.answer("first")
    loop._take_answers()
    assert runner.started == ["first", "other", "second"]
    runner.answer("second")
    loop._take_answers()
    loop._commit()
    assert producer.outputs == [b"out:first", b"out:second"]
    assert producer.commits[-1] == [(0, 1, encode_done(1, {2}))]


def test_records_a_lane_finishes_without_calls_are_written_in_lane_order() -> None:
    loop, producer, runner = loop_with()
    loop.process([record("slow", "lead-a", 0), record("sync-1", "lead-a", 1)])
    loop.process([record("sync-2", "lead-b", 2)])
    assert producer.open == [b"sync-2"]  # lead-a's sync record waits for its slow one
    runner.answer("slow")
    loop._take_answers()
    assert producer.open == [b"sync-2", b"out:slow", b"sync-1"]


def test_a_replay_skips_what_the_committed_metadata_lists_as_done() -> None:
    # A worker died after committing 1 and 3 done while 0 and 2 were out.
    consumer = Consumer(committed={0: (0, encode_done(0, {1, 3}))})
    loop, _, runner = loop_with(consumer)
    loop.process([record(n, f"lead-{n}", i) for i, n in enumerate(["a", "b", "c", "d", "e"])])
    assert runner.started == ["a", "c", "e"]
    assert loop.skipped == 2


def test_answers_to_calls_started_before_an_abort_are_dropped_and_their_records_rerun() -> None:
    loop, producer, runner = loop_with()
    loop.process([record("a", "lead-a", 0), record("b", "lead-b", 1)])
    runner.answer("b")
    loop._take_answers()
    assert producer.open == [b"out:b"]
    loop._abort_and_rewind(loop.stop)  # a broker away: the transaction cannot commit
    assert producer.aborts == 1 and producer.open == []
    assert (0, -2) in consumer_seeks(loop)  # back to the committed start
    runner.answer("a")  # the old call's answer comes after the rewind
    loop._take_answers()
    assert producer.open == []  # dropped: its record runs again
    assert loop.taken == 0 and loop.lanes == {}
    loop.process([record("a", "lead-a", 0), record("b", "lead-b", 1)])  # read again
    assert runner.started[-2:] == ["a", "b"]


def consumer_seeks(loop: ConcurrentStepLoop) -> list[tuple[int, int]]:
    consumer: Consumer = loop.consumer  # type: ignore[assignment]
    return consumer.seeks


def test_a_poison_record_is_dead_lettered_and_its_lane_goes_on() -> None:
    loop, producer, runner = loop_with()
    loop.process([record("slow", "lead-a", 0), record("poison", "lead-a", 1)])
    loop.process([record("after", "lead-a", 2)])
    runner.answer("slow")
    loop._take_answers()
    assert runner.started == ["slow", "after"]
    assert loop.dead_lettered == 1
    runner.answer("after")
    loop._take_answers()
    loop._commit()
    assert producer.commits[-1] == [(0, 3, "")]


def test_no_more_records_are_taken_than_max_in_flight() -> None:
    loop, _, runner = loop_with(max_in_flight=2)
    loop.process([record("a", "lead-a", 0), record("b", "lead-b", 1)])
    assert loop._room() == 0
    runner.answer("a")
    loop._take_answers()
    assert loop._room() == 1


def test_a_revoked_partitions_records_are_given_up_and_a_lane_behind_them_goes_on() -> None:
    loop, producer, runner = loop_with()
    loop.process([record("a0", "lead-a", 0, partition=0), record("a1", "lead-a", 0, partition=1)])
    loop.on_revoke(loop.consumer, [TopicPartition("in", 0)])  # type: ignore[arg-type]
    assert loop.ready and loop.ready[0].tp == ("in", 1)
    runner.answer("a0")  # the revoked record's answer: the new owner redoes it
    loop._take_answers()
    assert producer.open == []
    assert ("in", 0) not in loop.progress


def test_a_retired_handler_is_closed_once_nothing_taken_under_it_is_unfinished() -> None:
    loop, _, runner = loop_with()
    old = loop.handler
    loop.process([record("a", "lead-a", 0)])
    new = Handler()
    loop.retired.append(old)
    loop.handler = new
    loop._close_retired()
    assert not old.closed  # type: ignore[attr-defined]
    runner.answer("a")
    loop._take_answers()
    loop._close_retired()
    assert old.closed  # type: ignore[attr-defined]


def test_a_deadline_near_the_transaction_timeout_is_refused_only_where_calls_are_inside_it() -> (
    None
):
    flow = parse_flow(SLOW_FLOW, "slow.yaml")
    settings = Settings(transaction_timeout_ms=10_000)
    check_call_deadline(settings, flow, "buyer", concurrent=True)  # calls outside: any deadline
    with pytest.raises(FlowConfigError, match="timeout_ms: 8000 is more than half"):
        check_call_deadline(settings, flow, "buyer", concurrent=False)
    check_call_deadline(settings, flow, "source", concurrent=False)  # no call at all


def test_an_auctions_post_deadline_is_checked_as_a_recipients() -> None:
    auction = """
id: a
name: A
steps:
  - {id: source, kind: source, name: S, settings: {fields: [{name: state, type: state}]}}
  - id: auction
    kind: auction
    name: A
    settings:
      timeout_ms: 8000
      buyers:
        - {id: b, name: B, ping_url: "http://b/ping", post_url: "http://b/post",
           ping_fields: [state]}
"""
    flow = parse_flow(auction, "auction.yaml")
    settings = Settings(transaction_timeout_ms=10_000)
    check_call_deadline(settings, flow, "auction", concurrent=True)
    with pytest.raises(FlowConfigError, match=r"auction\.settings\.timeout_ms: 8000 is more than"):
        check_call_deadline(settings, flow, "auction", concurrent=False)


SLOW_FLOW = """
id: slow
name: Slow
version: 1
steps:
  - id: source
    kind: source
    name: Form
    settings:
      fields: [{name: email, type: email, required: true}]
  - id: buyer
    kind: recipient
    name: Buyer
    settings: {url: "http://127.0.0.1:9/leads", timeout_ms: 8000, mapping: {email: lead.email}}
"""


def test_a_held_retry_partition_stays_paused_when_its_spread_closes() -> None:
    consumer = Consumer()
    loop, _, runner = loop_with(consumer)
    loop.process([record("a", "lead-a", 0)])
    tp = ("in", 0)
    consumer.paused.add(0)  # held until a retry is due, and paused for its spread
    loop.held[tp] = 2**62
    loop.spread.add(tp)
    runner.answer("a")
    loop._take_answers()
    loop._pace_partitions()  # the spread closed: not a reason to resume a held partition
    assert 0 in consumer.paused and tp not in loop.spread
    loop.spread.add(tp)
    loop.held[tp] = 0  # due now, but still spread: it stays paused until pacing resumes it
    loop._release_due()
    assert 0 in consumer.paused and tp not in loop.held


class RefusingProducer(Producer):
    """Refuses outputs too large for the topic, as librdkafka does at produce time."""

    def produce(self, topic: str, value: bytes, key: bytes | None, **kw: Any) -> None:
        if topic == "out" and value.endswith(b"huge"):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        super().produce(topic, value, key, **kw)


def test_a_record_whose_outputs_are_refused_aborts_and_is_dead_lettered_when_it_comes_again() -> (
    None
):
    producer, runner = RefusingProducer(), ManualRunner()
    loop = ConcurrentStepLoop(
        Consumer(),  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        Handler(),
        calls=runner,
        input_topic="in",
        output_topic="out",
        dlq_topic="dlq",
        commit_interval_ms=60_000,
    )
    loop.stop.set()  # no backoff sleep after the abort
    loop.process([record("ok", "lead-a", 0), record("huge", "lead-b", 1)])
    runner.answer("ok")
    loop._take_answers()
    runner.answer("huge")
    loop._take_answers()
    assert producer.aborts == 1 and producer.open == []  # nothing of it half-written
    loop.process([record("ok", "lead-a", 0), record("huge", "lead-b", 1)])  # read again
    assert runner.started == ["ok", "huge", "ok"]  # the refused record does not run again
    assert loop.dead_lettered == 1
    runner.answer("ok")
    loop._take_answers()
    loop._commit()
    assert producer.commits[-1] == [(0, 2, "")]


def test_finished_records_are_reported_in_and_out_as_the_one_at_a_time_loop_reports_them() -> None:
    role = f"step:test:{uuid.uuid4().hex[:8]}"
    producer, runner = Producer(), ManualRunner()
    loop = ConcurrentStepLoop(
        Consumer(),  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        Handler(),
        calls=runner,
        input_topic="in",
        output_topic="out",
        dlq_topic="dlq",
        commit_interval_ms=60_000,
        metrics=WorkerMetrics(role),
    )
    loop.process(
        [record("a", "lead-a", 0), record("poison", "lead-b", 1), record("b", "lead-c", 2)]
    )
    runner.answer("a")
    loop._take_answers()
    loop._report()
    runner.answer("b")
    loop._take_answers()
    loop._report()

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"role": role, **labels})

    assert sample("leadflow_worker_records_in_total", topic="in", outcome="processed") == 2
    assert sample("leadflow_worker_records_in_total", topic="in", outcome="dead_lettered") == 1
    assert sample("leadflow_worker_records_out_total", target="out") == 2
    assert sample("leadflow_worker_dead_letters_total", target="dlq") == 1
