"""A buyer step at buyer speed, on the real stack: many calls in flight, each lead delivered
once, in a worker that is killed while hundreds of calls are out.

The buyer is the demo buyer with real latency (``engine.demo.buyer``); its own counts
(requests, idempotency keys seen twice, peak in flight) are the buyer's side of the proof,
the events on the topics are ours."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.demo.buyer import BuyerServer
from engine.demo.buyer_realism import Realism
from engine.flows import Flow, parse_flow
from engine.intake.fake import fake_lead
from engine.ops.submit import publish_leads
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from tests.factories import write_flow
from tests.kafka_helpers import events_by_lead, read_events, run_steps
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

FLOW = """
id: {flow_id}
name: Slow buyer
version: 1
topics: {{partitions: 3, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields:
        - {{name: email, type: email, required: true}}
        - {{name: phone_1, type: phone, required: true}}
  - id: buyer
    kind: recipient
    name: Slow buyer
    settings:
      url: {url}
      timeout_ms: {timeout_ms}
      mapping: {{email: lead.email, phone: lead.phone_1}}
      accept: {{path: outcome, value: success}}
      price_path: price
"""

DELIVERY_TYPES = ("recipient.delivered", "recipient.failed", "recipient.error")


def slow_flow(flow_id: str, url: str, timeout_ms: int) -> Flow:
    return parse_flow(FLOW.format(flow_id=flow_id, url=url, timeout_ms=timeout_ms), "slow.yaml")


def serve(buyer: BuyerServer) -> Iterator[BuyerServer]:
    buyer.start_in_thread()
    yield buyer
    buyer.stop()


def completed(events: list[dict[str, Any]]) -> int:
    return sum(e["type"] == "flow.completed" for e in events)


def wait_for_all(
    settings: Settings, flow: Flow, leads: int, timeout: float
) -> list[dict[str, Any]]:
    return wait_until(
        lambda: read_events(settings, flow, 10),
        timeout,
        f"all {leads} leads of {flow.id} to complete",
        until=lambda events: completed(events) >= leads,
        every=1,
        show=lambda events: f"{completed(events)} completed",
    )


def assert_each_lead_once(events: list[dict[str, Any]], ids: list[str]) -> None:
    """No event twice, every lead complete once, at most one delivery event per lead."""
    copies = Counter(e["id"] for e in events)
    assert [i for i, n in copies.items() if n > 1] == []
    timelines = events_by_lead(events)
    assert set(timelines) == set(ids)
    for lead_id in ids:
        types = [e["type"] for e in timelines[lead_id]]
        assert types.count("flow.completed") == 1, types
        assert sum(types.count(t) for t in DELIVERY_TYPES) <= 1, types
        assert types[-1] == "flow.completed"


@pytest.fixture
def slow_buyer() -> Iterator[BuyerServer]:
    yield from serve(BuyerServer(port=0, mix=False, realism=Realism(150, 600, seed=3)))


def test_one_worker_keeps_many_deliveries_in_flight_and_delivers_each_once(
    stack: Settings, unique_id: str, slow_buyer: BuyerServer
) -> None:
    # A generous deadline: the buyer shares this process (and its GIL) with both workers.
    flow = slow_flow(unique_id, slow_buyer.url, 10_000)
    prepare_topics(stack, flow)
    rng = random.Random(5)
    ids = publish_leads(stack, flow.id, [fake_lead(rng, n) for n in range(300)])
    stop = threading.Event()
    threads = run_steps(stack, flow, stop)
    try:
        events = wait_for_all(stack, flow, len(ids), 90)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert_each_lead_once(events, ids)
    seen = slow_buyer.stats.snapshot()
    # One at a time would be 1; 300 leads waiting on a 150 ms buyer keep dozens out.
    assert seen["peak_in_flight"] >= 20, seen
    assert seen["duplicates"] == 0, seen
    delivered = [e for e in events if e["type"] == "recipient.delivered"]
    assert len(delivered) == seen["requests"], Counter((e["type"], e["reason"]) for e in events)
    # The buyer's time is the wait, not the engine's overhead.
    # The buyer's time is the events' wait (its median is 150 ms), not the engine's overhead
    # (which the bench measures: here the buyer shares one process's GIL with both workers).
    waits = sorted(e["wait_ms"] for e in delivered)
    assert waits[len(waits) // 2] >= 100


def test_a_buyer_slower_than_the_transaction_timeout_is_posted_once(
    stack: Settings, unique_id: str
) -> None:
    # A 3 s buyer under a 2 s transaction timeout: with the call inside the transaction,
    # the transaction expired, was aborted and the lead posted again.
    buyers = serve(BuyerServer(port=0, mix=False, latency_s=3.0))
    buyer = next(buyers)
    try:
        settings = stack.model_copy(update={"transaction_timeout_ms": 2000})
        flow = slow_flow(unique_id, buyer.url, 5000)
        prepare_topics(settings, flow)
        rng = random.Random(6)
        ids = publish_leads(settings, flow.id, [fake_lead(rng, n) for n in range(20)])
        stop = threading.Event()
        threads = run_steps(settings, flow, stop)
        try:
            events = wait_for_all(settings, flow, len(ids), 60)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert_each_lead_once(events, ids)
        seen = buyer.stats.snapshot()
        posted = sum(e["type"] in DELIVERY_TYPES for e in events)
        assert seen["requests"] == posted and seen["duplicates"] == 0, seen
    finally:
        next(buyers, None)


def start_worker(role: str, flow_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEADFLOW_LOG_FORMAT": "json", "LEADFLOW_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", role, "--flow-file", str(flow_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.serial
def test_a_worker_killed_with_calls_out_records_each_delivery_once(
    stack: Settings, unique_id: str, tmp_path: Path
) -> None:
    """kill -9 of the buyer step while dozens of its calls are out: the next worker re-posts only
    what was unfinished (same idempotency keys: the buyer counts them as duplicates), and
    every delivery event is on the topic once."""
    realism = Realism(300, 2000, timeout_fraction=0.05, hold_s=30, seed=9)
    buyers = serve(BuyerServer(port=0, mix=False, realism=realism))
    buyer = next(buyers)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        flow = slow_flow(unique_id, buyer.url, 2500)
        flow_file = write_flow(tmp_path / "flow.yaml", flow)
        prepare_topics(stack, flow)
        rng = random.Random(12)
        # About four in ten fake leads pass the source: ~600 deliveries.
        ids = publish_leads(stack, flow.id, [fake_lead(rng, n) for n in range(1500)])
        procs = {role: start_worker(role, flow_file) for role in ("source", "buyer")}
        peaks = []
        for _ in range(2):
            wait_until(
                lambda: buyer.stats.snapshot()["in_flight"],
                60,
                "the buyer step to have calls out",
                until=lambda n: n >= 60,
                every=0.05,
            )
            peaks.append(buyer.stats.snapshot()["in_flight"])
            procs["buyer"].kill()  # SIGKILL: no shutdown code runs
            procs["buyer"].wait()
            time.sleep(0.5)
            procs["buyer"] = start_worker("buyer", flow_file)
        events = wait_for_all(stack, flow, len(ids), 180)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
        next(buyers, None)
    assert_each_lead_once(events, ids)
    seen = buyer.stats.snapshot()
    # Only unfinished work is made again, under its first call's key: what the worker had
    # taken at a kill (at most max_in_flight records) and what it had written in its open
    # transaction (a commit interval's answers) - never the ~700 it had committed.
    taken = stack.call_max_in_flight
    assert 0 < seen["duplicates"] <= len(peaks) * 2 * taken, (seen, peaks)
    # Each lead the buyer took has its delivery event, and no lead was posted under two keys
    # (a call that timed out before the buyer read it has an error event and no key there).
    delivered = sum(e["type"] == "recipient.delivered" for e in events)
    posted = sum(e["type"] in DELIVERY_TYPES for e in events)
    reasons = Counter(e["reason"] for e in events if e["type"] == "recipient.error")
    assert delivered <= seen["unique_keys"] <= posted, reasons
