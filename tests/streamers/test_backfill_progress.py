"""A backfill's progress reaches its total when it is done, on topics written in transactions.

The steps write every event inside a Kafka transaction, and each commit leaves a
marker that takes an offset of its own. The total is counted in offsets, the
progress was counted in records read: the bar stopped at 126/145 when done.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer

from engine.objects.contract import ObjectStore
from engine.runtime.kafka.config import transactional_producer_config
from engine.settings import Settings
from engine.topics import events_topic
from streamers.backfill import backfill
from tests.streamers.support import CODEC, create_topics, event_keys, make_events, streaming_flow

pytestmark = pytest.mark.stack


def produce_in_transactions(settings: Settings, events: list[dict[str, Any]]) -> None:
    """One transaction per lead, as a step commits its batches."""
    producer = Producer(transactional_producer_config(settings, f"test-{uuid.uuid4().hex}"))
    producer.init_transactions(30)
    for lead_id in dict.fromkeys(e["lead_id"] for e in events):
        producer.begin_transaction()
        for event in (e for e in events if e["lead_id"] == lead_id):
            topic = events_topic(event["flow_id"], event["step_id"])
            producer.produce(topic, CODEC.encode(event), lead_id.encode())
        producer.commit_transaction(30)


def test_progress_ends_at_its_total_although_commit_markers_take_offsets(
    stack: Settings, unique_id: str, stores: dict[str, ObjectStore]
) -> None:
    flow = streaming_flow(stack, unique_id, prefix=unique_id)
    create_topics(stack, flow)
    start = datetime.now(UTC)
    events = make_events(flow.id, 4)
    produce_in_transactions(stack, events)
    time.sleep(0.05)  # record timestamps are ms: the range ends after the last one

    seen: list[tuple[int, int]] = []
    result = backfill(
        stack, flow, flow.destinations[0], start, datetime.now(UTC),
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip

    assert result.created == len(events) == result.read
    total = seen[0][1]
    assert total > len(events)  # the markers' offsets are in the range
    assert seen[-1] == (total, total)
    for key in event_keys(stores["s3"], unique_id):
        stores["s3"].delete(key)
