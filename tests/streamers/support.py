"""Helpers for streamer tests: a flow streaming to both local stores, producing events, progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.contract import ObjectStore, directory
from engine.runtime.kafka.config import admin_config, consumer_config, producer_config
from engine.runtime.kafka.topics import ensure_flow_topics
from engine.settings import Settings
from engine.topics import events_topic
from schemas.codec import EventCodec, event_to_json_dict
from streamers import layout
from streamers.readback import duplicate_ids, read_events
from streamers.streamer import consumer_group_id
from tests import waiting
from tests.factories import make_flow, make_lead_events

CODEC = EventCodec()


def streaming_flow(
    settings: Settings,
    flow_id: str,
    prefix: str,
    s3: Mapping[str, Any] | None = None,
    azure: Mapping[str, Any] | None = None,
) -> Flow:
    """The demo flow under ``flow_id``, streaming to the local S3 bucket and Azure container;
    ``s3`` and ``azure`` set more of each destination's fields (format, layout, batch...)."""
    flow = make_flow(flow_id, "http://127.0.0.1:9/unused")
    return flow.model_copy(
        update={
            "destinations": [
                Destination(kind="s3", bucket=settings.s3_bucket, prefix=prefix, **(s3 or {})),
                Destination(
                    kind="azure_blob",
                    bucket=settings.azure_container,
                    prefix=prefix,
                    **(azure or {}),
                ),
            ]
        }
    )


def events_across_an_hour(flow_id: str, leads: int) -> list[dict[str, Any]]:
    """Leads submitted 100 ms apart from 16:59:58 UTC: their events straddle an hour."""
    start_ms = 1_764_003_598_000
    return [
        e
        for i in range(leads)
        for e in make_lead_events(flow_id=flow_id, submitted_ms=start_ms + 100 * i)
    ]


def expected_events(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Event id -> the JSON the destination must hold for it (in any layout or format)."""
    out = {}
    for event in events:
        decoded = CODEC.decode(CODEC.encode(event))
        out[decoded["id"]] = orjson.loads(orjson.dumps(event_to_json_dict(decoded)))
    return out


def assert_holds_exactly(store: ObjectStore, prefix: str, expected: dict[str, Any]) -> None:
    """The destination's objects, read back, are the expected events: each once, no other."""
    events = list(read_events(store, prefix))
    assert duplicate_ids(events) == [], store.name
    assert {e["id"]: e for e in events} == expected, store.name


def create_topics(settings: Settings, flow: Flow) -> list[str]:
    """The flow's topics (3 partitions each); returns its events topics."""
    ensure_flow_topics(AdminClient(admin_config(settings)), flow)
    return [events_topic(flow.id, s.id) for s in flow.steps]


def make_events(flow_id: str, leads: int) -> list[dict[str, Any]]:
    return [e for _ in range(leads) for e in make_lead_events(flow_id=flow_id)]


def produce_events(settings: Settings, flow_id: str, events: Iterable[dict[str, Any]]) -> None:
    producer = Producer(producer_config(settings))
    for event in events:
        topic = events_topic(flow_id, event["step_id"])
        producer.produce(topic, CODEC.encode(event), event["lead_id"].encode())
    assert producer.flush(15) == 0


def produce_raw(settings: Settings, topic: str, value: bytes, key: bytes) -> None:
    producer = Producer(producer_config(settings))
    producer.produce(topic, value, key)
    assert producer.flush(15) == 0


def expected_objects(prefix: str, events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Key -> parsed JSON content the streamer must write for each event."""
    out = {}
    for event in events:
        decoded = CODEC.decode(CODEC.encode(event))
        key = layout.event_key(prefix, decoded["lead_id"], decoded["id"])
        out[key] = orjson.loads(orjson.dumps(event_to_json_dict(decoded)))
    return out


def read_objects(store: ObjectStore, keys: Iterable[str]) -> dict[str, bytes]:
    keys = list(keys)
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(keys, pool.map(store.get, keys), strict=True))


def event_keys(store: ObjectStore, prefix: str) -> list[str]:
    keys = store.list_keys(directory(prefix))
    return [k for k in keys if not layout.is_dead_letter_key(prefix, k)]


def offsets(settings: Settings, flow: Flow, topics: list[str]) -> dict[str, Any]:
    """Per destination group: committed offsets and high watermarks, by (topic, partition)."""
    consumer = Consumer(consumer_config(settings, f"{flow.id}.offset-reader"))
    try:
        metadata = consumer.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p) for t in topics for p in metadata[t].partitions]
        high = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp)[1] for tp in parts}
    finally:
        consumer.close()
    out: dict[str, Any] = {"high": high}
    for destination in flow.destinations:
        group = consumer_group_id(flow.id, destination)
        reader = Consumer(consumer_config(settings, group))
        try:
            committed = reader.committed(parts, timeout=10)
        finally:
            reader.close()
        # -1001 (no commit yet) counts as 0: a partition with no events has nothing to commit.
        out[group] = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
    return out


def all_committed(
    settings: Settings, flow: Flow, topics: list[str], only: Destination | None = None
) -> bool:
    """Every destination's group (or ``only`` this one's) has committed up to the end."""
    state = offsets(settings, flow, topics)
    high = state.pop("high")
    if only is not None:
        return bool(state[consumer_group_id(flow.id, only)] == high)
    return all(committed == high for committed in state.values())


# How long a test waits for every event to be committed: a liveness bound, not a speed
# claim. Per-event tests write hundreds of objects to Azurite (single-threaded), which
# shares two cores with the other test workers under `make test`.
SETTLE_S = 180


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.3) -> None:
    """``tests.waiting.wait_until``, at a slower pace: the usual check here, ``all_committed``,
    opens a consumer per destination each time."""
    waiting.wait_until(check, timeout, what, every=every)
