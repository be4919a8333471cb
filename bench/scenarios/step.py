"""step: one leadflow filter step worker on the shared input - decode, evaluate, encode, produce.

With ``sealed`` (the ``step_sealed`` scenario) the flow seals the personal fields and the
input is ``bench.sealed_input``'s: open, evaluate, seal again - the cost of encryption.

The worker is the engine's own (``build_step_loop``: its consumer, transactional
producer, handler and ``TransactionalStepLoop``). Only its topics are pointed
elsewhere: the input at the shared bench topic, the output at the bench's sink,
and a flow id per round gives each round a fresh consumer group.
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import Message

from bench.clock import RateClock
from bench.flows import filter_flow
from bench.sealed_input import sealing
from engine.logs import configure_logging
from engine.runtime.handlers import Record, StepHandler
from engine.runtime.step_worker import build_step_loop
from engine.settings import Settings


class CountedHandler:
    """The real handler, plus the bench clock; stops the loop after the N-th record."""

    def __init__(self, inner: StepHandler, clock: RateClock, stop: threading.Event) -> None:
        self.inner, self.clock, self.stop = inner, clock, stop

    def handle(self, msg: Message) -> list[Record]:
        records = self.inner.handle(msg)
        if self.clock.tick():
            self.stop.set()
        return records

    def prefetch(self, messages: list[Message]) -> None:
        """The real handler's batch key lookup (a sealing flow's), as the loop calls it."""
        prefetch = getattr(self.inner, "prefetch", None)
        if prefetch is not None:
            prefetch(messages)

    def close(self) -> None:
        self.inner.close()


def run_round(params: dict[str, Any]) -> dict[str, float]:
    configure_logging("json", "WARNING")
    settings = Settings(commit_interval_ms=params["commit_interval_ms"], instance_id="bench")
    flow = filter_flow(f"b{params['run_id']}-step-r{params['round']}", params["partitions"])
    if params.get("sealed"):  # step_sealed: the same step, its flow sealing the personal fields
        settings = settings.model_copy(update={"db_schema": params["db_schema"]})
        flow = sealing(flow)
    loop = build_step_loop(settings, flow, "service-area")
    loop.input_topic, loop.output_topic = params["input_topic"], params["output_topic"]
    clock, stop = RateClock(params["events"]), threading.Event()
    loop.handler = CountedHandler(loop.handler, clock, stop)
    loop.run(stop)  # returns once the final transaction is committed and the worker closed
    clock.finish()
    return {"events_s": clock.rate(), "dead_lettered": float(loop.dead_lettered)}
