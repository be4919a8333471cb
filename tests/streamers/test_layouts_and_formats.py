"""Every layout and format, end to end on real Kafka, SeaweedFS and Azurite: the objects
land where the layout says, and reading the destination back gives the exact event set."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from engine.flows import Flow
from engine.objects.contract import ObjectStore
from engine.settings import Settings
from streamers.readback import event_object_keys
from streamers.streamer import Streamer, run_streamers
from tests.streamers.support import (
    SETTLE_S,
    all_committed,
    assert_holds_exactly,
    create_topics,
    events_across_an_hour,
    expected_events,
    produce_events,
    streaming_flow,
    wait_until,
)

pytestmark = pytest.mark.stack

# Small objects, so one run cuts them by count, by hour, by event time and by idle timeout.
BATCH = {"max_records": 40, "max_seconds": 2}


def stream_until_committed(settings: Settings, flow: Flow, topics: list[str]) -> list[Streamer]:
    stop = threading.Event()
    result: dict[str, list[Streamer]] = {}
    thread = threading.Thread(target=lambda: result.update(s=run_streamers(settings, flow, stop)))
    thread.start()
    try:
        wait_until(lambda: all_committed(settings, flow, topics), SETTLE_S, "offsets committed")
    finally:
        stop.set()
        thread.join(30)
    return result["s"]


@pytest.mark.parametrize(
    ("destination", "key_pattern"),
    [
        ({"format": "json"}, r"^{prefix}/L/E\.json$"),
        ({"format": "json", "layout": "time"}, r"^{prefix}/flow_id=F/dt=D/hour=H/L/E\.json$"),
        ({"format": "jsonl.gz", "batch": BATCH}, r"^{prefix}/flow_id=F/dt=D/hour=H/T\.jsonl\.gz$"),
        ({"format": "avro", "batch": BATCH}, r"^{prefix}/flow_id=F/dt=D/hour=H/T\.avro$"),
    ],
    ids=["json-lead", "json-time", "jsonl.gz", "avro"],
)
def test_a_destination_holds_every_event_once_in_its_layout_and_format(
    stack: Settings,
    unique_id: str,
    stores: dict[str, ObjectStore],
    destination: dict[str, Any],
    key_pattern: str,
) -> None:
    prefix = f"streamer-tests/{unique_id}"
    flow = streaming_flow(stack, unique_id, prefix, s3=destination, azure=destination)
    topics = create_topics(stack, flow)
    events = events_across_an_hour(unique_id, leads=60)  # 300 events, 16:59:58 to 17:00:04
    produce_events(stack, flow.id, events)

    streamers = stream_until_committed(stack, flow, topics)

    pattern = (
        key_pattern.replace("{prefix}", prefix)
        .replace("flow_id=F", f"flow_id={unique_id}")
        .replace("dt=D", "dt=2025-11-24")
        .replace("hour=H", "hour=(16|17)")
        .replace("L/E", "[0-9A-Z]{26}/[0-9A-Z]{26}")
        .replace("T", rf"leadflow\.{unique_id}\.events\.[a-z_-]+\+[0-2]\+[0-9]{{19}}")
    )
    for kind, store in stores.items():
        keys = event_object_keys(store, prefix)
        assert keys, kind
        assert all(re.match(pattern, key) for key in keys), (kind, keys[:3])
        assert_holds_exactly(store, prefix, expected_events(events))
        if destination["format"] != "json":
            assert len(keys) < len(events) / 4, kind
    assert [s.stats.dead_lettered for s in streamers] == [0, 0]
