"""The streamer's observer on the real stack: deactivation by failed writes, re-enabling,
last activity in the state table, metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.destinations import Deactivation, Destination
from engine.flows import Flow
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError
from engine.settings import Settings
from streamers.destination_observer import DestinationObserver, observers_for
from streamers.lifecycle import ACTIVATED, DEACTIVATED, Lifecycle, read_events
from streamers.metrics import StreamerMetrics
from tests.streamers.support import streaming_flow

pytestmark = pytest.mark.stack


@pytest.fixture
def schema_settings(stack: Settings, unique_id: str) -> Settings:
    return stack.model_copy(update={"db_schema": unique_id})


@pytest.fixture
def flow(schema_settings: Settings, unique_id: str) -> Flow:
    flow = streaming_flow(schema_settings, unique_id, prefix=unique_id)
    policy = Deactivation(after_failures=3, after_seconds=60)
    s3 = flow.destinations[0].model_copy(update={"deactivation": policy})
    return flow.model_copy(update={"destinations": [s3]})


@pytest.fixture
def lifecycle(schema_settings: Settings) -> Iterator[Lifecycle]:
    opened = Lifecycle(schema_settings)
    yield opened
    opened.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_real_failure(settings: Settings) -> DestinationError:
    """What a store answers when its bucket is wrong (S3 refuses this name)."""
    store = open_store(Destination(kind="s3", bucket="Leadflow-Missing"), settings)
    try:
        store.put_if_absent("k.json", b"{}", "application/json")
    except DestinationError as exc:
        return exc
    finally:
        store.close()
    raise AssertionError("the wrong bucket accepted a write")


def test_failures_past_the_policy_deactivate_then_the_user_re_enables(
    schema_settings: Settings, flow: Flow, lifecycle: Lifecycle
) -> None:
    destination = flow.destinations[0]
    assert lifecycle.verify(flow, destination, by="flow apply").state == "active"
    clock, metrics = Clock(), StreamerMetrics()
    observer = DestinationObserver(
        lifecycle, flow.id, destination, clock=clock, activity_every_s=0,
        metrics=metrics.for_destination(flow.id, destination.key),
    )  # fmt: skip
    assert observer.active()
    error = a_real_failure(schema_settings)

    for _ in range(3):  # at 0 s, 30 s and 60 s: both thresholds crossed at the third
        assert observer.active()
        observer.failed(error)
        clock.now += 30
    assert not observer.active()
    state = lifecycle.state(flow.id, destination.key)
    assert state is not None and state.state == "deactivated"
    assert state.reason == f"3 failed writes over 60s without a success; last error: {error.cause}"
    assert state.last_error == error.cause and state.last_error_at is not None
    observer.failed(error)  # the loop may still report failures: no second deactivation
    assert metrics.retries.labels(flow=flow.id, destination=destination.key)._value.get() == 4
    assert metrics.active.labels(flow=flow.id, destination=destination.key)._value.get() == 0

    assert lifecycle.enable(flow, destination).state == "active"
    assert not observer.active()  # cached until the next read, a few seconds later
    clock.now += 5
    assert observer.active()
    assert observer.health.failures == 0  # old failures do not count against it again
    observer.close()

    events = [(e.type, e.reason) for e in read_events(schema_settings, flow.id)]
    assert [t for t, _ in events] == [ACTIVATED, DEACTIVATED, ACTIVATED]
    assert events[1][1].startswith("3 failed writes over 60s without a success")


def test_the_last_object_and_error_are_recorded_at_most_once_per_interval(
    schema_settings: Settings, flow: Flow, lifecycle: Lifecycle
) -> None:
    destination = flow.destinations[0]
    lifecycle.verify(flow, destination, by="flow apply")
    clock, metrics = Clock(), StreamerMetrics()
    observer = DestinationObserver(
        lifecycle, flow.id, destination, clock=clock, activity_every_s=1.0,
        metrics=metrics.for_destination(flow.id, destination.key),
    )  # fmt: skip

    observer.written("p/L1/E1.json", 120, created=True)
    observer.written("p/L1/E2.json", 80, created=False)  # within the second: not yet written
    state = lifecycle.state(flow.id, destination.key)
    assert state is not None and state.last_object_key == "p/L1/E1.json"
    clock.now += 1
    observer.committed({("t", 0): 2})
    state = lifecycle.state(flow.id, destination.key)
    assert state is not None and state.last_object_key == "p/L1/E2.json"
    assert state.last_object_at is not None and state.last_error is None
    labels = {"flow": flow.id, "destination": destination.key}
    assert metrics.objects.labels(**labels, result="created")._value.get() == 1
    assert metrics.objects.labels(**labels, result="exists")._value.get() == 1
    assert metrics.bytes.labels(**labels)._value.get() == 200
    observer.close()


def test_a_destination_never_verified_is_verified_when_its_streamer_starts(
    schema_settings: Settings, flow: Flow
) -> None:
    observer = observers_for(schema_settings, flow)[flow.destinations[0].key]
    try:
        assert observer.active()
    finally:
        observer.close()
        observer.lifecycle.close()
    assert [(e.type, e.reason) for e in read_events(schema_settings, flow.id)] == [
        (ACTIVATED, "verified at streamer start")
    ]


def test_metrics_are_exposed_over_http() -> None:
    import httpx

    from streamers.metrics import serve_metrics

    metrics = StreamerMetrics()
    metrics.for_destination("demo", "s3-events").written(42, created=True)
    server, thread = serve_metrics(metrics, port=0)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert (
        'leadflow_streamer_objects_total{destination="s3-events",flow="demo",result="created"} 1.0'
        in text
    )
    assert 'leadflow_streamer_bytes_total{destination="s3-events",flow="demo"} 42.0' in text
