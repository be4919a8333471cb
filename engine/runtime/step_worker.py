"""Wire one step of one flow to Kafka: its consumer group, its transactional producer."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import structlog

from engine.errors import FlowConfigError, LeadflowError
from engine.flows import Flow
from engine.runtime.calls import CallRunner, ManyCallRunner, call_runner
from engine.runtime.concurrent_loop import ConcurrentStepLoop
from engine.runtime.handlers import StepHandler, fused_into, make_handler
from engine.runtime.handlers.base import EventInputHandler
from engine.runtime.kafka.clients import new_admin, new_consumer, new_transactional_producer
from engine.runtime.kafka.config import static_instance_id
from engine.runtime.kafka.metrics import WorkerMetrics
from engine.runtime.kafka.topics import ensure_flow_topics
from engine.runtime.registry import FlowRegistry
from engine.runtime.schema_registry import step_codec
from engine.runtime.step_loop import TransactionalStepLoop
from engine.settings import Settings
from engine.topics import RETRYING_KINDS, dlq_topic, events_topic, input_topic, retry_topic
from schemas.codec import EventCodec

log = structlog.get_logger(__name__)


class FlowChangedError(LeadflowError):
    """The step's place in its flow changed (removed, or a new input topic): the worker
    must be restarted with the new topology rather than patched in place."""


def step_group(flow_id: str, step_id: str) -> str:
    return f"leadflow.{flow_id}.step.{step_id}"


# Steps whose records wait on a service: their workers keep many records in flight.
CALLING_KINDS = frozenset({"recipient", "enhancement", "auction"})


def follow_registry(
    settings: Settings,
    registry: FlowRegistry,
    flow: Flow,
    step_id: str,
    codec: EventCodec,
    calls: CallRunner | None = None,
) -> Callable[[], StepHandler | None]:
    """A watch for the step loop: a new handler when a newer version of the flow is applied;
    ``FlowChangedError`` when the step is gone, reads other topics, or is of another kind
    (another loop: a calling step's, a retry topic): its worker is started again."""
    version, reads, kind = flow.version, topics_read(flow, step_id), flow.step(step_id).kind

    def watch() -> StepHandler | None:
        nonlocal version
        registry.refresh(timeout=0.5)
        latest = registry.get(flow.id)
        if latest is None or latest.version == version:
            return None
        moved = (
            step_id not in [s.id for s in latest.steps]
            or latest.step(step_id).kind != kind
            or topics_read(latest, step_id) != reads
        )
        if moved:
            raise FlowChangedError(f"step {step_id} of {flow.id} moved in v{latest.version}")
        version = latest.version
        log.info("flow version applied", flow=flow.id, version=version, step=step_id)
        return make_handler(latest, step_id, settings.instance_id, codec, settings, calls)

    return watch


def topics_read(flow: Flow, step_id: str) -> tuple[str, ...]:
    """What the step's worker subscribes to: its input, and its retry topic if it retries."""
    source = input_topic(flow, step_id)
    if flow.step(step_id).kind in RETRYING_KINDS:
        return (source, retry_topic(flow.id, step_id))
    return (source,)


def check_call_deadline(settings: Settings, flow: Flow, step_id: str, *, concurrent: bool) -> None:
    """A calling step run one record at a time makes its call inside the step's transaction:
    a deadline near ``transaction.timeout.ms`` would let the transaction expire mid-call and
    the lead be posted again. The concurrent loop makes calls outside transactions, so any
    deadline the flow allows holds there."""
    step = flow.step(step_id)
    timeout_ms = getattr(step.settings, "timeout_ms", None)
    if concurrent or step.kind not in CALLING_KINDS or not isinstance(timeout_ms, int):
        return
    # Room for the rest of the transaction: the commit, and the records before the call.
    limit = settings.transaction_timeout_ms // 2
    if timeout_ms > limit:
        raise FlowConfigError(
            flow.id,
            [
                f"steps.{step_id}.settings.timeout_ms: {timeout_ms} is more than half of"
                f" transaction.timeout.ms ({settings.transaction_timeout_ms}) and this loop"
                " calls inside the transaction; run it with a call runner (the default) or"
                " lower timeout_ms"
            ],
        )


def build_step_loop(
    settings: Settings,
    flow: Flow,
    step_id: str,
    worker_index: int = 0,
    registry: FlowRegistry | None = None,
    calls: ManyCallRunner | None = None,
    stop: threading.Event | None = None,
) -> TransactionalStepLoop:
    """The step's loop: with ``calls`` (a calling step's), one that keeps many records in
    flight on that runner; else one record at a time."""
    check_call_deadline(settings, flow, step_id, concurrent=calls is not None)
    # Before any client: in registry mode this waits for the registry (logging each try),
    # so the step never writes an event it could not frame.
    codec = step_codec(settings, [events_topic(flow.id, step_id)], stop)
    group = step_group(flow.id, step_id)
    # A stable transactional.id per (step, instance): a restarted worker fences
    # its killed predecessor at once instead of waiting out its transaction.
    txn_id = f"{group}.{settings.instance_id}.{worker_index}"
    # Static membership under a stable id: a restarted worker takes its partitions back at
    # once instead of waiting out the dead one's session - while it reads the same topics.
    reads = topics_read(flow, step_id)
    source, retry = reads[0], (reads[1] if len(reads) > 1 else None)
    overrides: dict[str, Any] = {"group.instance.id": static_instance_id(txn_id, reads)}
    predecessor = fused_into(flow, step_id, settings)
    if predecessor is not None:
        # Its leads are decided in the predecessor's worker; this one only takes hand-offs
        # written before the fusion, so it need not ask the broker 100 times a second.
        overrides["fetch.wait.max.ms"] = 500
        log.info("step decided in the previous step's worker", step=step_id, by=predecessor)
    consumer = new_consumer(settings, group, **overrides)
    metrics = WorkerMetrics(f"step:{flow.id}:{step_id}")
    producer = new_transactional_producer(settings, txn_id, metrics)
    handler = make_handler(flow, step_id, settings.instance_id, codec, settings, calls)
    common: dict[str, Any] = dict(
        input_topic=source,
        output_topic=events_topic(flow.id, step_id),
        dlq_topic=dlq_topic(flow.id),
        batch_size=settings.batch_size,
        commit_interval_ms=settings.commit_interval_ms,
        commit_linger_ms=settings.commit_linger_ms,
        retry_topic=retry,
        watch=(
            follow_registry(settings, registry, flow, step_id, codec, calls) if registry else None
        ),
        metrics=metrics,
    )
    if calls is None:
        return TransactionalStepLoop(consumer, producer, handler, **common)
    if not isinstance(handler, EventInputHandler):  # a calling step reads hand-off events
        raise TypeError(f"step {step_id} of {flow.id} is a {flow.step(step_id).kind}")
    return ConcurrentStepLoop(
        consumer,
        producer,
        handler,
        calls=calls,
        max_in_flight=settings.call_max_in_flight,
        stop_grace_s=settings.step_stop_grace_ms / 1000,
        **common,
    )


def prepare_topics(settings: Settings, flow: Flow) -> list[str]:
    created = ensure_flow_topics(new_admin(settings), flow)
    if created:
        log.info("topics created", flow=flow.id, topics=created)
    return created


def run_step(
    settings: Settings,
    flow: Flow,
    step_id: str,
    stop: threading.Event,
    worker_index: int = 0,
    registry: FlowRegistry | None = None,
) -> None:
    # A calling step's worker owns one runner: its loop and every flow version's handler
    # share its connections, its in-flight bound and its breakers.
    calls = call_runner(settings) if flow.step(step_id).kind in CALLING_KINDS else None
    if calls is not None:
        # Two busy threads (the loop, the runner's event loop) hand the GIL over at most
        # every switch interval (5 ms by default), which a lead waits at each hand-over.
        sys.setswitchinterval(0.0005)
    try:
        loop = build_step_loop(settings, flow, step_id, worker_index, registry, calls, stop)
        structlog.contextvars.bind_contextvars(role=f"step:{step_id}", flow=flow.id)
        log.info("step worker started", input=loop.input_topic, output=loop.output_topic)
        try:
            loop.run(stop)
        except FlowChangedError as exc:
            log.info("step moved in its flow, restarting", reason=str(exc))
        log.info("step worker stopped", processed=loop.processed, dead_lettered=loop.dead_lettered)
    finally:
        if calls is not None:
            calls.close()
