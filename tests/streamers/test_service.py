"""The streamer service: what ``leadflow run``'s streamer role runs counts every object, its
bytes and its destination's lag, and serves them to prometheus."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from engine.settings import Settings
from streamers.metrics import StreamerMetrics
from streamers.service import measure_lag_once, stream_flow
from tests.streamers.support import (
    SETTLE_S,
    all_committed,
    create_topics,
    make_events,
    produce_events,
    streaming_flow,
    wait_until,
)

pytestmark = pytest.mark.stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_service_counts_objects_and_lag_and_serves_them(
    stack: Settings, unique_id: str
) -> None:
    settings = stack.model_copy(update={"db_schema": unique_id})
    flow = streaming_flow(settings, unique_id, prefix=unique_id)
    flow = flow.model_copy(update={"destinations": flow.destinations[:1]})
    topics = create_topics(settings, flow)
    events = make_events(flow.id, 4)
    produce_events(settings, flow.id, events)
    metrics, port, stop = StreamerMetrics(), free_port(), threading.Event()
    series = metrics.for_destination(flow.id, flow.destinations[0].key)
    measure_lag_once(settings, flow, metrics)
    assert series.lag._value.get() == len(events)  # nothing committed yet

    runner = threading.Thread(
        target=stream_flow,
        args=(settings, flow, stop),
        kwargs={"metrics": metrics, "metrics_port": port},
    )
    runner.start()
    try:
        wait_until(lambda: all_committed(settings, flow, topics), SETTLE_S, "every event committed")
        measure_lag_once(settings, flow, metrics)
        exposed = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        stop.set()
        runner.join(30)

    assert series.created._value.get() == len(events)
    assert series.lag._value.get() == 0
    assert series.bytes._value.get() > 0
    [created] = [
        line
        for line in exposed.splitlines()
        if line.startswith("leadflow_streamer_objects_total{") and 'result="created"' in line
    ]
    assert f'destination="{flow.destinations[0].key}"' in created
    assert created.endswith(f" {float(len(events))}")
