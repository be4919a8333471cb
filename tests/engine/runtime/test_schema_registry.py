"""Registry mode against the real registry: start-up waits, both versions on one topic."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from structlog.testing import capture_logs

from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.runtime.schema_registry import (
    SchemaRegistry,
    SchemaRegistryUnavailableError,
    reading_codec,
    register_until_up,
    step_codec,
    value_subject,
)
from engine.settings import Settings
from schemas.codec import EventCodec, historical_schemas, load_schema
from tests.factories import make_lead_events

pytestmark = pytest.mark.stack

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
    with SchemaRegistryClient({"url": stack.schema_registry_url}) as sr:
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
    with SchemaRegistryClient({"url": stack.schema_registry_url}) as sr:
        deserialize = AvroDeserializer(sr)
        ctx = SerializationContext(topic, MessageField.VALUE)
        downstream = [deserialize(v, ctx) for v in got[1:]]
    assert [e["total_ms"] for e in downstream] == [old["total_ms"], WEEKS_MS]
