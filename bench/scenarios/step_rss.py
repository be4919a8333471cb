"""step_rss: one filter step worker over a million events, its RSS sampled along the way.

Issue #7's target is a worker whose memory stays flat however long it runs. The
worker is the same as the ``step`` scenario's; the shared input is read again and
again (seeking back to the start after each full pass, like ``passthrough``) until
``events`` records are handled, and the process's RSS is read every ``sample_every``
records. Samples from the first pass are warm-up (librdkafka's fetch queue and
producer buffers filling, the allocator's arenas) and left out; "first" and "last" are
the medians of the first and the last third of the rest, so one sample taken while a
batch is in flight does not decide the verdict.
"""

from __future__ import annotations

import statistics
import threading
from typing import Any

import psutil
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from bench.clock import RateClock
from bench.flows import filter_flow
from engine.logs import configure_logging
from engine.runtime.handlers import Record, StepHandler
from engine.runtime.step_loop import TransactionalStepLoop
from engine.runtime.step_worker import build_step_loop
from engine.settings import Settings


class LoopingHandler:
    """The real handler; rewinds the input after each full pass, samples RSS, stops at N."""

    def __init__(
        self,
        inner: StepHandler,
        loop: TransactionalStepLoop,
        input_size: int,
        params: dict[str, Any],
        stop: threading.Event,
    ) -> None:
        self.inner, self.loop, self.stop = inner, loop, stop
        self.input_size, self.sample_every = input_size, params["sample_every"]
        self.clock = RateClock(params["rss_events"])
        self.process = psutil.Process()
        self.samples: list[tuple[int, float]] = []

    def handle(self, msg: Message) -> list[Record]:
        records = self.inner.handle(msg)
        done = self.clock.tick()
        count = self.clock.count
        if count % self.sample_every == 0:
            self.samples.append((count, self.process.memory_info().rss / 2**20))
        if count % self.input_size == 0:  # a full pass: read the input again
            for tp in self.loop.consumer.assignment():
                self.loop.consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
        if done:
            self.stop.set()
        return records

    def close(self) -> None:
        self.inner.close()


def run_round(params: dict[str, Any]) -> dict[str, Any]:
    configure_logging("json", "WARNING")
    settings = Settings(commit_interval_ms=params["commit_interval_ms"], instance_id="bench")
    flow = filter_flow(f"b{params['run_id']}-rss-r{params['round']}", params["partitions"])
    loop = build_step_loop(settings, flow, "service-area")
    loop.input_topic, loop.output_topic = params["input_topic"], params["output_topic"]
    stop = threading.Event()
    handler = LoopingHandler(loop.handler, loop, params["events"], params, stop)
    loop.handler = handler
    loop.run(stop)
    handler.clock.finish()
    samples = handler.samples
    steady = [mb for count, mb in samples if count > params["events"]] or [mb for _, mb in samples]
    third = max(1, len(steady) // 3)
    first, last = statistics.median(steady[:third]), statistics.median(steady[-third:])
    return {
        "events": float(handler.clock.count),
        "events_s": handler.clock.rate(),
        "rss_first_mb": first,
        "rss_last_mb": last,
        "rss_growth_mb": last - first,
        "rss_max_mb": max(mb for _, mb in samples),
        "series": samples,
    }
