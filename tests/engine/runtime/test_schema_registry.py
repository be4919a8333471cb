"""Registry mode against the real registry: start-up waits, both versions on one topic."""

from __future__ import annotations

import copy
import threading

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from structlog.testing import capture_logs

from engine.demo.buyer import BuyerServer
from engine.ops.submit import publish_leads
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.config import consumer_config
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.runtime.registry import apply_flow, read_flows
from engine.runtime.schema_registry import (
    SchemaIncompatibleError,
    SchemaRegistry,
    SchemaRegistryUnavailableError,
    reading_codec,
    register_until_up,
    step_codec,
    value_subject,
)
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import HANDOFF_HEADER, dlq_topic, events_topic
from schemas.codec import EventCodec, historical_schemas, load_schema
from tests.factories import make_flow, make_lead_events
from tests.kafka_helpers import run_steps, wait_for_completion
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

GOOD_LEAD = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone_1": "(512) 555-0123",
    "state": "TX",
    "tcpa_consent": True,
    "email": "ada@example.com",
}
WEEKS_MS = 40 * 24 * 3600 * 1000  # past an int's 24.8 days


def test_a_registry_down_at_start_is_waited_for_one_log_line_a_try(stack: Settings) -> None:
    down = SchemaRegistry("http://127.0.0.1:9/apis/ccompat/v7")  # discard port: refused
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    with capture_logs() as logs, pytest.raises(SchemaRegistryUnavailableError):
        register_until_up(down, ["t-value"], load_schema(), retry_s=0.1, stop=stop)
    down.close()
    waits = [e for e in logs if e["event"].startswith("schema registry unavailable")]
    assert len(waits) >= 2
    assert [e["attempt"] for e in waits[:2]] == [1, 2]
    assert waits[0]["subject"] == "t-value"


def test_registry_mode_registers_under_the_topic_subject_and_frames_with_its_id(
    stack: Settings, unique_id: str
) -> None:
    topic = f"leadflow.{unique_id}.events.source"
    settings = stack.model_copy(update={"event_encoding": "registry"})
    codec = step_codec(settings, [topic])
    with SchemaRegistryClient({"url": stack.schema_registry_url, "timeout": 10}) as sr:
        registered = sr.get_latest_version(value_subject(topic))
        assert sr.get_compatibility(value_subject(topic)) == "BACKWARD"
    assert codec.schema_id == registered.schema_id
    data = codec.encode(make_lead_events()[0])
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == registered.schema_id


def test_one_consumer_reads_a_topic_holding_v3_and_v4_events_in_both_encodings(
    stack: Settings, unique_id: str
) -> None:
    topic = f"leadflow.{unique_id}.events.mixed"
    ensure_topics(new_admin(stack), [TopicSpec(topic, 1, 1, {})], timeout=10.0)
    registry = SchemaRegistry(stack.schema_registry_url)
    v3 = historical_schemas()[-1]
    v3_names = {f["name"] for f in v3["fields"]}
    v3_id = registry.register(value_subject(topic), v3)
    v4_id = registry.register(value_subject(topic), load_schema())
    registry.close()
    old, new = make_lead_events()[:2]
    old_v3 = {k: v for k, v in old.items() if k in v3_names}
    values = [
        EventCodec(v3).encode(old_v3),  # v3, single-object (before registry mode)
        EventCodec(v3, schema_id=v3_id).encode(old_v3),  # v3, wire format
        EventCodec(schema_id=v4_id).encode({**new, "total_ms": WEEKS_MS}),  # v4, long
    ]
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap_servers})
    for value in values:
        producer.produce(topic, value, key=b"k")
    assert producer.flush(10) == 0

    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap_servers, "group.id": unique_id})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    while len(got) < len(values):
        msg = consumer.poll(10)
        assert msg is not None, f"only {len(got)} of {len(values)} records came"
        if not msg.error():
            got.append(msg.value() or b"")
    consumer.close()

    # leadflow's reader: every record, whatever its framing or version, as v4.
    codec = reading_codec(stack)
    decoded = [codec.decode(v) for v in got]
    assert [e["id"] for e in decoded] == [old["id"], old["id"], new["id"]]
    assert [e["total_ms"] for e in decoded] == [old["total_ms"], old["total_ms"], WEEKS_MS]
    # A downstream reader (confluent-kafka's own deserializer) reads the wire-format ones,
    # each with the writer schema the registry holds under its id.
    with SchemaRegistryClient({"url": stack.schema_registry_url, "timeout": 10}) as sr:
        deserialize = AvroDeserializer(sr)
        ctx = SerializationContext(topic, MessageField.VALUE)
        downstream = [deserialize(v, ctx) for v in got[1:]]
    assert [e["total_ms"] for e in downstream] == [old["total_ms"], WEEKS_MS]


def test_a_step_dead_letters_an_event_whose_schema_id_the_registry_does_not_have(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    settings = stack.model_copy(update={"event_encoding": "registry"})
    flow = make_flow(unique_id, buyer.url)
    prepare_topics(settings, flow)
    unknown_id = 2**31 - 5
    framed = EventCodec(schema_id=unknown_id).encode(make_lead_events(flow_id=flow.id)[1])
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap_servers})
    producer.produce(
        events_topic(flow.id, "source"), framed, b"k", headers=[(HANDOFF_HEADER, b"1")]
    )
    assert producer.flush(10) == 0
    stop = threading.Event()
    threads = run_steps(settings, flow, stop)
    try:
        publish_leads(settings, flow.id, [GOOD_LEAD])
        wait_for_completion(settings, flow, 1)  # the step went on past it
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    consumer = Consumer(consumer_config(stack, f"{unique_id}-dlq-reader"))
    consumer.subscribe([dlq_topic(flow.id)])
    messages = wait_until(
        lambda: [m for m in consumer.consume(10, timeout=1) if not m.error()],
        15,
        "the dead letter",
        every=0,
    )
    consumer.close()
    assert [m.value() for m in messages] == [framed]  # kept byte for byte
    error = dict(messages[0].headers() or [])["leadflow-error"]
    assert isinstance(error, bytes) and f"unknown schema id {unknown_id}".encode() in error
    # And the lead that came after it went through in the wire format.
    raw = read_raw_values(stack, events_topic(flow.id, flow.steps[1].id))
    assert raw and all(v[0] == 0 for v in raw)


def read_raw_values(settings: Settings, topic: str) -> list[bytes]:
    consumer = Consumer(
        consumer_config(settings, "unused-reader", **{"enable.partition.eof": True})
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out, ends = [], 0
    while ends < len(parts):
        msg = consumer.poll(5)
        assert msg is not None, f"no end of {topic} in sight"
        if msg.error():
            ends += 1
        else:
            out.append(msg.value() or b"")
    consumer.close()
    return out


def test_flow_apply_in_registry_mode_fails_on_a_schema_the_registry_refuses_naming_the_field(
    stack: Settings, unique_id: str, buyer: BuyerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stack.model_copy(update={"event_encoding": "registry"})
    flow = make_flow(unique_id, buyer.url)
    subject = value_subject(events_topic(flow.id, flow.steps[1].id))
    registry = SchemaRegistry(stack.schema_registry_url)
    registry.register(subject, load_schema())  # what the deployment registered so far
    registry.close()
    # A change that cannot read those events: ``total_ms`` narrowed back to int. (The
    # registry only ever holds compatible versions: nothing to clean up after.)
    narrowed = copy.deepcopy(load_schema())
    next(f for f in narrowed["fields"] if f["name"] == "total_ms")["type"] = "int"
    monkeypatch.setattr("engine.runtime.schema_registry.load_schema", lambda: narrowed)
    with pytest.raises(SchemaIncompatibleError) as refused:
        apply_flow(settings, flow)
    assert refused.value.problems == ["total_ms: writer long is not readable as int"]
    assert refused.value.subject == subject
    assert all(f.id != flow.id for f in read_flows(stack))  # not recorded
