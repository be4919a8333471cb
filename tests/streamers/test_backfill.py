"""Backfill on the real stack: exactly the events of a time range, idempotent, with progress."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.contract import ObjectStore
from engine.settings import Settings
from engine.topics import events_topic
from schemas.codec import EventCodec
from streamers.backfill import BackfillError, backfill
from streamers.per_event import object_for_record
from tests.factories import write_flow
from tests.streamers.support import (
    create_topics,
    event_keys,
    expected_objects,
    make_events,
    produce_events,
    streaming_flow,
)

pytestmark = pytest.mark.stack
CODEC = EventCodec()


def produced_between(settings: Settings, flow: Flow, leads: int) -> tuple[list[Any], datetime]:
    """Produce ``leads`` leads' events; returns them and a time after every one of them."""
    events = make_events(flow.id, leads)
    produce_events(settings, flow.id, events)
    time.sleep(0.05)  # record timestamps are ms: keep the ranges apart
    return events, datetime.now(UTC)


def test_a_range_writes_exactly_its_events_and_again_writes_nothing(
    stack: Settings, unique_id: str, stores: dict[str, ObjectStore]
) -> None:
    flow = streaming_flow(stack, unique_id, prefix=unique_id)
    s3 = flow.destinations[0]
    create_topics(stack, flow)
    _, t1 = produced_between(stack, flow, 2)
    middle, t2 = produced_between(stack, flow, 3)
    late, _ = produced_between(stack, flow, 1)

    seen: list[tuple[int, int]] = []
    first = backfill(
        stack, flow, s3, t1, t2, progress=lambda done, total: seen.append((done, total))
    )

    assert sorted(event_keys(stores["s3"], unique_id)) == sorted(
        expected_objects(unique_id, middle)
    )
    assert (first.in_range, first.created, first.existed) == (len(middle), len(middle), 0)
    assert seen[-1][0] == seen[-1][1] == first.read
    again = backfill(stack, flow, s3, t1, t2)
    assert (again.created, again.existed) == (0, len(middle))
    rest = backfill(stack, flow, s3, t2)  # open-ended: up to the end of the topics
    assert rest.created == len(late)
    wanted = expected_objects(unique_id, middle + late)
    assert sorted(event_keys(stores["s3"], unique_id)) == sorted(wanted)


def test_the_cli_backfills_the_time_layout_with_a_progress_bar(
    stack: Settings, unique_id: str, stores: dict[str, ObjectStore], tmp_path: Path
) -> None:
    flow = streaming_flow(stack, unique_id, prefix=unique_id)
    azure = flow.destinations[1].model_copy(update={"layout": "time", "id": "azure-time"})
    flow = flow.model_copy(update={"destinations": [flow.destinations[0], azure]})
    create_topics(stack, flow)
    start = datetime.now(UTC)
    events, _ = produced_between(stack, flow, 2)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)

    result = CliRunner().invoke(
        app,
        ["streamer", "backfill", flow.id, "azure-time", "--from", start.isoformat(), "-f",
         str(flow_file)],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"{len(events)} events in range: {len(events)} objects created" in result.output
    keys = {
        object_for_record(
            CODEC, unique_id, events_topic(flow.id, e["step_id"]), 0, 0, CODEC.encode(e),
            key_layout="time",
        ).key
        for e in events
    }  # fmt: skip
    assert sorted(event_keys(stores["azure_blob"], unique_id)) == sorted(keys)
    assert all("/dt=" in key for key in keys)


def test_batched_formats_are_refused_with_the_reason(stack: Settings, unique_id: str) -> None:
    flow = streaming_flow(stack, unique_id, prefix=unique_id)
    batched = Destination(kind="s3", bucket=stack.s3_bucket, format="jsonl.gz")
    with pytest.raises(BackfillError, match=r"format jsonl\.gz is not supported yet"):
        backfill(stack, flow, batched, datetime.now(UTC))
