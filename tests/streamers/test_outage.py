"""A store stopped for 30 s mid-run, then restarted: the streamer retries with backoff,
stays in its consumer group with its partitions paused, the other destination keeps
flowing, and once the store is back every event is there exactly once. No credential
reaches the logs on the way."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.objects.contract import ObjectStore
from engine.objects.errors import DestinationError
from engine.settings import Settings
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
from tests.streamers.test_object_store_contract import AZURITE_ACCOUNT_KEY

REPO = Path(__file__).parents[2]
# It stops the shared S3 and Azurite: nothing else may run meanwhile.
pytestmark = [pytest.mark.stack, pytest.mark.serial]

OUTAGE_S = 30
BATCH = {"max_records": 40, "max_seconds": 2}
# Far below the outage: a streamer that stopped polling while it retries would be
# evicted from its group (and lose its partitions) long before the store is back.
CONSUMER = {"max.poll.interval.ms": 10_000}


class RecordingObserver:
    def __init__(self) -> None:
        self.objects: list[tuple[str, int, bool]] = []
        self.failures: list[DestinationError] = []
        self.commits: list[dict[tuple[str, int], int]] = []

    def written(self, key: str, size: int, created: bool) -> None:
        self.objects.append((key, size, created))

    def failed(self, error: DestinationError) -> None:
        self.failures.append(error)

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        self.commits.append(offsets)

    def active(self) -> bool:
        return True


def stack_service(action: str, service: str) -> None:
    subprocess.run(["bash", f"stack/{action}.sh", service], cwd=REPO, check=True, timeout=120)


def secrets(settings: Settings) -> list[str]:
    assert settings.aws_secret_access_key is not None
    return [
        settings.aws_secret_access_key.get_secret_value(),
        settings.azure_storage_connection_string.get_secret_value(),
        AZURITE_ACCOUNT_KEY,
    ]


@pytest.mark.parametrize(
    ("service", "kind", "fmt"),
    [("s3", "s3", "jsonl.gz"), ("azure", "azure_blob", "avro")],
    ids=["seaweedfs", "azurite"],
)
def test_a_store_down_for_30s_loses_nothing_duplicates_nothing_and_holds_back_nothing_else(
    stack: Settings,
    unique_id: str,
    stores: dict[str, ObjectStore],
    capfd: pytest.CaptureFixture[str],
    service: str,
    kind: str,
    fmt: str,
) -> None:
    prefix = f"streamer-tests/{unique_id}"
    batched: dict[str, Any] = {"format": fmt, "batch": BATCH}
    flow = streaming_flow(
        stack,
        unique_id,
        prefix,
        s3=batched if kind == "s3" else None,
        azure=batched if kind == "azure_blob" else None,
    )
    failing = next(d for d in flow.destinations if d.kind == kind)
    healthy = next(d for d in flow.destinations if d.kind != kind)
    topics = create_topics(stack, flow)
    events = events_across_an_hour(unique_id, leads=80)
    before, during = events[:150], events[150:]
    observers = {d.key: RecordingObserver() for d in flow.destinations}
    watched = observers[failing.key]

    stop = threading.Event()
    result: dict[str, list[Streamer]] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            s=run_streamers(stack, flow, stop, consumer_overrides=CONSUMER, observers=observers)
        )
    )
    thread.start()
    try:
        produce_events(stack, flow.id, before)
        wait_until(lambda: bool(watched.commits), 30, "a first commit")
        stack_service("down", service)
        try:
            down_at = time.monotonic()
            produce_events(stack, flow.id, during)
            wait_until(
                lambda: all_committed(stack, flow, topics, only=healthy), 30, "the other store"
            )
            wait_until(lambda: bool(watched.failures), 30, "failed writes")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        finally:
            stack_service("up", service)
        wait_until(lambda: all_committed(stack, flow, topics), SETTLE_S, "everything committed")
    finally:
        stop.set()
        thread.join(30)

    streamer = next(s for s in result["s"] if s.destination == failing)
    assert streamer.stats.partitions_lost == 0
    # Backoff, not a spin: a handful of attempts per pending object over the outage.
    assert 0 < len(watched.failures) < 20 * 9
    assert watched.commits and watched.objects
    expected = expected_events(events)
    for store in stores.values():
        assert_holds_exactly(store, prefix, expected)
    captured = capfd.readouterr()
    assert "writes failed, retrying" in captured.out + captured.err
    for secret in secrets(stack):
        assert secret not in captured.out + captured.err
