"""step: one leadflow filter step worker on the shared input - decode, evaluate, encode, produce.

With ``sealed`` (the ``step_sealed`` scenario) the flow seals the personal fields and the
input is ``bench.sealed_input``'s: open, evaluate, seal again - the cost of encryption.

The worker is the engine's own (``build_step_loop``: its consumer, transactional
producer, handler and ``TransactionalStepLoop``). Only its topics are pointed
elsewhere: the input at the shared bench topic, the output at the bench's sink,
and a flow id per round gives each round a fresh consumer group.

``encoding``: the deployment's event encoding (``single-object``, or ``registry``: the
Confluent wire format with the id the stack's registry gives the schema). In registry
mode the round also times encoding alone, leadflow's framing of fastavro's bytes against
confluent-kafka's ``AvroSerializer`` (same registry, same events), to show which the
step should use.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
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
    encoding = params.get("encoding", "single-object")
    settings = Settings(
        commit_interval_ms=params["commit_interval_ms"],
        instance_id="bench",
        event_encoding=encoding,
    )
    suffix = "" if encoding == "single-object" else "-sr"
    sealed = bool(params.get("sealed"))
    # A flow id, so a consumer group, of the round's own: step_sealed's rounds read another
    # topic than step's, and a group's member may not change its topics under one id.
    suffix += "-sealed" if sealed else ""
    flow = filter_flow(f"b{params['run_id']}-step-r{params['round']}{suffix}", params["partitions"])
    if sealed:  # step_sealed: the same step, its flow sealing the personal fields
        settings = settings.model_copy(update={"db_schema": params["db_schema"]})
        flow = sealing(flow)
    loop = build_step_loop(settings, flow, "service-area")
    loop.input_topic, loop.output_topic = params["input_topic"], params["output_topic"]
    clock, stop = RateClock(params["events"]), threading.Event()
    loop.handler = CountedHandler(loop.handler, clock, stop)
    loop.run(stop)  # returns once the final transaction is committed and the worker closed
    clock.finish()
    figures = {
        "events_s": clock.rate(),
        "cpu_ms_per_event": clock.cpu_ms_per_event(),
        "dead_lettered": float(loop.dead_lettered),
    }
    if encoding == "registry":
        figures.update(encoders(settings, params["output_topic"]))
    return figures


def encoders(settings: Settings, topic: str, count: int = 20_000) -> dict[str, float]:
    """Events/s of encoding alone: the step's codec (fastavro's compiled bytes behind the
    registered id) and confluent-kafka's ``AvroSerializer`` (its own fastavro writer)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from bench.inputs import accepted_events
    from engine.runtime.schema_registry import step_codec
    from schemas.codec import load_schema

    codec = step_codec(settings, [topic])
    # Events as a step holds them before writing: epoch-ms timestamps (decode gives
    # datetimes, which both writers would first convert), the snapshot a plain dict.
    events = [
        {**e, "timestamp": ms(e["timestamp"]), "expires_at": ms(e["expires_at"])}
        for e in (codec.decode(value) for _, value, _ in accepted_events("enc", 2_000))
    ]
    batch = (events * (count // len(events) + 1))[:count]
    started = time.perf_counter()
    for event in batch:
        codec.encode(event)
    ours = count / (time.perf_counter() - started)
    with SchemaRegistryClient({"url": settings.schema_registry_url}) as sr:
        serializer = AvroSerializer(
            sr, json.dumps(load_schema()), conf={"auto.register.schemas": True}
        )
        ctx = SerializationContext(topic, MessageField.VALUE)
        same = serializer(batch[0], ctx)
        started = time.perf_counter()
        for event in batch:
            serializer(event, ctx)
        theirs = count / (time.perf_counter() - started)
    return {
        "encode_framed_events_s": ours,
        "encode_avro_serializer_events_s": theirs,
        # 1.0: confluent's serializer wrote the very bytes the step writes.
        "same_bytes": float(same == codec.encode(batch[0])),
    }


def ms(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else value
