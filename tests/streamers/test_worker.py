"""The streamer end to end on real Kafka, SeaweedFS and Azurite, and its pure record decisions."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from azure.storage.blob import BlobServiceClient
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.contract import ObjectStore, PutResult, directory
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError
from engine.settings import Settings
from engine.topics import events_topic
from schemas.codec import EventCodec, event_to_json_dict
from streamers import layout
from streamers.observer import NullObserver
from streamers.per_event import BINARY, JSON, object_for_record
from streamers.streamer import Streamer, consumer_group_id, events_pattern, run_streamers
from tests.factories import make_lead_events
from tests.streamers.memory_store import MemoryStore
from tests.streamers.support import (
    SETTLE_S,
    all_committed,
    create_topics,
    event_keys,
    expected_objects,
    make_events,
    offsets,
    produce_events,
    produce_raw,
    read_objects,
    streaming_flow,
    wait_until,
)

CODEC = EventCodec()

# -- pure decisions -------------------------------------------------------------------


def test_a_record_becomes_its_event_json_at_prefix_lead_event() -> None:
    event = make_lead_events(flow_id="f")[0]
    write = object_for_record(CODEC, "/p/", "leadflow.f.events.source", 0, 7, CODEC.encode(event))
    assert write.key == f"p/{event['lead_id']}/{event['id']}.json"
    assert write.content_type == JSON
    assert write.dead_letter_reason is None
    decoded = CODEC.decode(CODEC.encode(event))
    assert orjson.loads(write.body) == orjson.loads(orjson.dumps(event_to_json_dict(decoded)))


@pytest.mark.parametrize("value", [b"not avro", b"", None, b"\xc3\x01" + b"\x00" * 8 + b"xx"])
def test_an_undecodable_record_becomes_a_dead_letter_keyed_by_its_position(
    value: bytes | None,
) -> None:
    write = object_for_record(CODEC, "p", "leadflow.f.events.source", 2, 41, value)
    assert write.key == layout.dead_letter_key("p", "leadflow.f.events.source", 2, 41)
    assert write.body == (value or b"")
    assert write.content_type == BINARY
    assert write.dead_letter_reason


def test_each_destination_has_its_own_readable_consumer_group() -> None:
    s3 = Destination(kind="s3", bucket="events", prefix="/tenants/acme/")
    azure = Destination(kind="azure_blob", bucket="events", prefix="")
    assert consumer_group_id("demo", s3) == "leadflow.demo.streamer.s3.events.tenants_acme"
    assert consumer_group_id("demo", azure) == "leadflow.demo.streamer.azure_blob.events"


def test_the_subscription_matches_only_the_flows_event_topics() -> None:
    pattern = re.compile(events_pattern("demo"))
    assert pattern.match("leadflow.demo.events.source")
    assert not pattern.match("leadflow.demo.intake")
    assert not pattern.match("leadflow.demo2.events.source")


class _FencedConsumer:
    """A consumer whose static membership was fenced (after a broker failure, by its own
    group.instance.id): consume and commit report ``_FATAL``, with ``fatal()`` False."""

    ERROR = KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer")

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        class Msg:
            def error(self) -> KafkaError:
                return _FencedConsumer.ERROR

        return [Msg()]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        raise KafkaException(self.ERROR)


def test_a_fenced_consumer_ends_the_streamer_instead_of_idling_in_a_live_process(
    settings: Settings,
) -> None:
    # Found by make chaos SOAK: logged as a warning, the Azure streamer stopped reading
    # while its process, and so its supervisor, saw nothing wrong.
    assert not _FencedConsumer.ERROR.fatal()
    flow = streaming_flow(settings, "fenced", "p")
    streamer = Streamer(settings, flow, flow.destinations[1])
    consumer: Any = _FencedConsumer()
    with pytest.raises(KafkaException):
        streamer._consume(consumer, timeout=0.1)
    with pytest.raises(KafkaException):
        streamer._commit(consumer, {("leadflow.fenced.events.source", 0): 5})


# -- end to end ------------------------------------------------------------------------


def run_until_committed(settings: Settings, flow: Flow, topics: list[str]) -> list[Streamer]:
    stop = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result["streamers"] = run_streamers(settings, flow, stop)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(lambda: all_committed(settings, flow, topics), SETTLE_S, "offsets committed")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    streamers: list[Streamer] = result["streamers"]
    return streamers


@pytest.mark.stack
def test_every_event_lands_once_in_each_store_and_offsets_reach_the_end(
    stack: Settings, unique_id: str, stores: dict[str, ObjectStore]
) -> None:
    prefix = f"streamer-tests/{unique_id}/"
    flow = streaming_flow(stack, unique_id, prefix)
    topics = create_topics(stack, flow)
    events = make_events(unique_id, leads=60)  # 300 events, over 3 topics x 3 partitions
    produce_events(stack, flow.id, events)

    streamers = run_until_committed(stack, flow, topics)

    expected = expected_objects(prefix, events)
    assert len(expected) == 300
    for kind, store in stores.items():
        keys = event_keys(store, prefix)
        assert keys == sorted(expected), kind
        contents = read_objects(store, keys)
        assert {k: orjson.loads(v) for k, v in contents.items()} == expected, kind
    state = offsets(stack, flow, topics)
    high = state.pop("high")
    assert sum(high.values()) == 300
    assert list(state.values()) == [high, high]
    assert [s.stats.created for s in streamers] == [300, 300]
    assert [s.stats.dead_lettered for s in streamers] == [0, 0]


@pytest.mark.stack
def test_a_poison_record_is_dead_lettered_once_and_the_stream_goes_on(
    stack: Settings, unique_id: str, stores: dict[str, ObjectStore]
) -> None:
    prefix = f"streamer-tests/{unique_id}"
    flow = streaming_flow(stack, unique_id, prefix)
    topics = create_topics(stack, flow)
    topic = events_topic(flow.id, "source")
    before, after = make_events(unique_id, leads=2), make_events(unique_id, leads=2)
    produce_events(stack, flow.id, before)
    # Same key as a real lead, so it lands between that lead's events on one partition.
    produce_raw(stack, topic, b"\x00garbage", before[0]["lead_id"].encode())
    produce_events(stack, flow.id, after)

    streamers = run_until_committed(stack, flow, topics)

    expected = expected_objects(prefix, before + after)
    for kind, store in stores.items():
        assert event_keys(store, prefix) == sorted(expected), kind
        dead = store.list_keys(f"{directory(prefix)}{layout.DEAD_LETTER_DIR}/")
        assert len(dead) == 1, kind
        assert dead[0].startswith(f"{prefix}/_dead_letter/{topic}+"), kind
        assert store.get(dead[0]) == b"\x00garbage", kind
    assert [s.stats.dead_lettered for s in streamers] == [1, 1]


class FailureCounter(NullObserver):
    """Counts a destination's failed writes, so the test knows the outage was felt."""

    def __init__(self) -> None:
        self.count = 0

    def failed(self, error: DestinationError) -> None:
        self.count += 1


@pytest.mark.stack
def test_a_failing_destination_holds_back_nothing_skips_nothing_and_catches_up(
    stack: Settings, unique_id: str, stores: dict[str, ObjectStore]
) -> None:
    prefix = f"streamer-tests/{unique_id}"
    container = f"missing-{unique_id}"  # does not exist until the outage ends
    flow = streaming_flow(stack, unique_id, prefix)
    s3, azure = flow.destinations
    flow = flow.model_copy(
        update={"destinations": [s3, azure.model_copy(update={"bucket": container})]}
    )
    azure_group = consumer_group_id(flow.id, flow.destinations[1])
    topics = create_topics(stack, flow)
    events = make_events(unique_id, leads=10)
    produce_events(stack, flow.id, events)
    expected = expected_objects(prefix, events)

    # During the outage: S3 streams everything, Azure retries and commits nothing.
    stop = threading.Event()
    result: dict[str, list[Streamer]] = {}
    azure_failures = FailureCounter()
    observers = {flow.destinations[1].key: azure_failures}
    thread = threading.Thread(
        target=lambda: result.update(s=run_streamers(stack, flow, stop, observers=observers))
    )
    thread.start()
    try:
        wait_until(lambda: all_committed(stack, flow, topics, only=s3), 30, "S3 to finish")
        wait_until(lambda: azure_failures.count > 0, 30, "Azure to have failed a write")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "stopping mid-retry must not wait for the destination"
    s3_streamer, azure_streamer = result["s"]
    assert s3_streamer.stats.created == len(expected)
    assert azure_streamer.stats.failed_attempts > 0
    assert azure_streamer.stats.created == 0
    assert set(offsets(stack, flow, topics)[azure_group].values()) == {0}

    # The outage ends: the Azure streamer resumes where it committed and catches up.
    service = BlobServiceClient.from_connection_string(
        stack.azure_storage_connection_string.get_secret_value()
    )
    service.create_container(container)
    try:
        streamers = run_until_committed(stack, flow, topics)
        azure_store = open_store(flow.destinations[1], stack)
        assert event_keys(azure_store, prefix) == sorted(expected)
        azure_store.close()
        assert [s.stats.created for s in streamers] == [0, len(expected)]
    finally:
        service.delete_container(container)
        service.close()
    assert event_keys(stores["s3"], prefix) == sorted(expected)


class GatedStore(MemoryStore):
    """Holds its first write until ``release`` is set: a round whose slowest PUT hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self._first = threading.Lock()

    def put_if_absent(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        if self._first.acquire(blocking=False):
            assert self.release.wait(60), "the test never released the first write"
        return super().put_if_absent(key, body, content_type, metadata)


@pytest.mark.stack
def test_rounds_overlap_a_slow_write_but_commit_only_in_the_order_read(
    stack: Settings, unique_id: str
) -> None:
    prefix = f"streamer-tests/{unique_id}"
    flow = streaming_flow(stack, unique_id, prefix)
    destination = flow.destinations[0]
    group = consumer_group_id(flow.id, destination)
    topics = create_topics(stack, flow)
    events = make_events(unique_id, leads=8)  # 40 events, rounds of at most 10
    produce_events(stack, flow.id, events)
    store = GatedStore()
    streamer = Streamer(stack, flow, destination, store=store, batch_size=10)
    stop = threading.Event()
    thread = threading.Thread(target=streamer.run, args=(stop,))
    thread.start()
    try:
        # The first round waits on one write; the rounds read after it are written
        # meanwhile (more objects than one round holds), and none of them is committed.
        wait_until(lambda: len(store.objects) >= 15, 60, "later rounds written meanwhile")
        assert set(offsets(stack, flow, topics)[group].values()) == {0}
        store.release.set()
        only = flow.model_copy(update={"destinations": [destination]})
        wait_until(lambda: all_committed(stack, only, topics), 60, "every round committed")
    finally:
        store.release.set()
        stop.set()
        thread.join(30)
    assert sorted(store.objects) == sorted(expected_objects(prefix, events))
    assert streamer.stats.created == len(events) and streamer.stats.existed == 0
