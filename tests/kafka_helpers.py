"""Reading what the engine wrote, straight from the topics, as a downstream service would."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from engine.flows import Flow
from engine.runtime.kafka.config import consumer_config
from engine.runtime.schema_registry import reading_codec
from engine.runtime.step_worker import run_step
from engine.settings import Settings
from engine.topics import flow_event_topics
from schemas.codec import SchemaMismatchError
from tests.waiting import wait_until


def read_events(settings: Settings, flow: Flow, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every committed event of the flow, in partition order (so per lead, in order)."""
    consumer = Consumer(
        consumer_config(settings, "unused-reader", **{"enable.partition.eof": True})
    )
    topics = flow_event_topics(flow)
    metadata = consumer.list_topics(timeout=10).topics
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata[t].partitions]
    consumer.assign(parts)
    pending = {(tp.topic, tp.partition) for tp in parts}
    codec = reading_codec(settings)  # both encodings, ids through the registry
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error():
                pending.discard((msg.topic(), msg.partition()))
                continue
            try:
                out.append(codec.decode(msg.value() or b""))
            except SchemaMismatchError:
                continue  # poison a test planted; the dead-letter topic is checked separately
    consumer.close()
    return out


def events_by_lead(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_lead: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e["id"]):
        by_lead[event["lead_id"]].append(event)
    return dict(by_lead)


def run_steps(
    settings: Settings, flow: Flow, stop: threading.Event, without: str | None = None
) -> list[threading.Thread]:
    """Every step of the flow (but ``without``) as its worker runs it (a calling step's on
    the concurrent loop, with its own call runner), in a thread, until ``stop`` is set."""
    threads = []
    for step in flow.steps:
        if step.id == without:
            continue
        thread = threading.Thread(
            target=run_step, args=(settings, flow, step.id, stop), name=step.id, daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads


def wait_for_completion(
    settings: Settings, flow: Flow, leads: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """Every event of the flow once ``leads`` leads have completed (``flow.completed``)."""
    return wait_until(
        lambda: read_events(settings, flow, 5),
        timeout,
        f"{leads} leads of {flow.id} to complete",
        until=lambda events: sum(e["type"] == "flow.completed" for e in events) >= leads,
        every=1,
    )
