"""kill -9 of step workers at random moments loses no event and duplicates none."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.demo.buyer import BuyerServer
from engine.intake.fake import fake_lead
from engine.ops.submit import publish_leads
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from tests.factories import make_flow, write_flow
from tests.kafka_helpers import events_by_lead, read_events
from tests.waiting import wait_until

# kill -9 at chosen moments needs the machine to itself to hit them (make test runs the
# serial tests alone, after the rest).
pytestmark = [pytest.mark.stack, pytest.mark.serial]

LEADS = 400


def completed(events: list[dict[str, Any]]) -> int:
    return sum(e["type"] == "flow.completed" for e in events)


@pytest.fixture
def buyer() -> Iterator[BuyerServer]:
    # 20 ms per delivery: a batch spans several commit intervals, so kills land
    # between a mid-batch commit and the end of the batch.
    server = BuyerServer(port=0, mix=True, latency_s=0.03)
    server.start_in_thread()
    yield server
    server.stop()


def start(role: str, flow_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEADFLOW_LOG_FORMAT": "json", "LEADFLOW_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", role, "--flow-file", str(flow_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_steps_killed_at_random_lose_and_duplicate_nothing(
    stack: Settings, unique_id: str, buyer: BuyerServer, tmp_path: Path
) -> None:
    flow = make_flow(unique_id, buyer.url)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    prepare_topics(stack, flow)
    rng = random.Random(11)
    leads = [fake_lead(rng, n) for n in range(LEADS)]
    roles = [s.id for s in flow.steps]
    procs = {role: start(role, flow_file) for role in roles}
    kills = 0
    try:
        ids: list[str] = []
        for chunk in range(8):  # leads keep arriving while workers die
            ids += publish_leads(stack, flow.id, leads[chunk * 50 : (chunk + 1) * 50])
            time.sleep(rng.uniform(0.4, 1.0))
            # Every other kill hits the buyer step mid-batch (50 leads x 30 ms).
            victim = "premier" if chunk % 2 == 0 else rng.choice(roles)
            procs[victim].kill()  # SIGKILL: no shutdown code runs
            procs[victim].wait()
            kills += 1
            procs[victim] = start(victim, flow_file)
        events = wait_until(
            lambda: read_events(stack, flow, 10),
            120,
            f"all {LEADS} leads to complete",
            until=lambda events: completed(events) >= LEADS,
            every=2,
            show=lambda events: f"{completed(events)} completed",
        )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)

    assert kills == 8
    copies = Counter(e["id"] for e in events)
    assert [i for i, n in copies.items() if n > 1] == []  # no event recorded twice
    timelines = events_by_lead(events)
    assert set(timelines) == set(ids)  # no lead lost
    for lead_id in ids:
        types = [e["type"] for e in timelines[lead_id]]
        assert types[0] == "source.submitted"
        assert types[-1] == "flow.completed"
        assert types.count("flow.completed") == 1
        # consecutive steps, no gaps: step_count rises by at most one per event
        counts = [e["step_count"] for e in timelines[lead_id]]
        assert counts == sorted(counts)
        assert set(counts) == set(range(1, counts[-1] + 1))
