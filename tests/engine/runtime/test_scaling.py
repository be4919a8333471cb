"""Scaling out: two worker processes share one step's partitions, and multi-buyer paths."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.intake.fake import fake_lead
from engine.ops.submit import publish_leads
from engine.runtime.kafka.config import admin_config
from engine.runtime.step_worker import prepare_topics, step_group
from engine.settings import Settings
from tests.factories import DEMO_FLOW, make_flow, write_flow
from tests.kafka_helpers import events_by_lead, read_events
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


def start(role: str, flow_file: Path, instance: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEADFLOW_INSTANCE_ID": instance, "LEADFLOW_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", role, "--flow-file", str(flow_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_completed(stack: Settings, flow: Flow, n: int, timeout: float = 90) -> list[dict]:  # type: ignore[type-arg]
    def completed(events: list[dict]) -> int:  # type: ignore[type-arg]
        return sum(e["type"] == "flow.completed" for e in events)

    return wait_until(
        lambda: read_events(stack, flow, 10),
        timeout,
        f"{n} leads to complete",
        until=lambda events: completed(events) >= n,
        every=1,
        show=lambda events: f"{completed(events)} completed",
    )


def wait_for_members(stack: Settings, group: str, n: int, timeout: float = 60) -> None:
    """Both processes in the group, each with partitions: only then is sharing testable."""
    admin = AdminClient(admin_config(stack))

    def members() -> list[Any]:
        try:
            return list(admin.describe_consumer_groups([group])[group].result(10).members)
        except KafkaException:
            return []

    wait_until(
        members,
        timeout,
        f"group {group} to have {n} members with partitions",
        until=lambda found: len(found) >= n and all(m.assignment.topic_partitions for m in found),
        every=0.5,
        show=lambda found: [(m.member_id, len(m.assignment.topic_partitions)) for m in found],
    )


def test_two_processes_share_a_step_and_each_lead_is_handled_once(
    stack: Settings, unique_id: str, buyer: BuyerServer, tmp_path: Path
) -> None:
    flow = make_flow(unique_id, buyer.url, partitions=4)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    prepare_topics(stack, flow)
    procs = [
        start("source", flow_file, "solo"),
        start("service-area", flow_file, "filter-a"),
        start("service-area", flow_file, "filter-b"),
        start("premier", flow_file, "solo"),
    ]
    try:
        wait_for_members(stack, step_group(flow.id, "service-area"), 2)
        rng = random.Random(3)
        ids = publish_leads(stack, flow.id, [fake_lead(rng, n) for n in range(200)])
        events = wait_completed(stack, flow, len(ids))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    filter_events = [e for e in events if e["step_id"] == "service-area"]
    assert Counter(e["lead_id"] for e in filter_events if e["type"].startswith("filter.")) == {
        lead: 1
        for lead in ids
        if any(e["lead_id"] == lead and e["type"] == "source.accepted" for e in events)
    }
    assert {e["host"] for e in filter_events} == {"filter-a", "filter-b"}  # both took a share
    assert len(events_by_lead(events)) == len(ids)


def test_multi_buyer_path_offers_every_buyer_or_stops_at_the_first_sale(
    stack: Settings, unique_id: str, buyer: BuyerServer, tmp_path: Path
) -> None:
    import threading

    from engine.runtime.step_worker import build_step_loop

    def flow_with_two_buyers(flow_id: str, stop_first: bool) -> Flow:
        text = DEMO_FLOW.read_text().replace("id: demo\n", f"id: {flow_id}\n", 1)
        text = text.replace("url: http://127.0.0.1:8765/leads", f"url: {buyer.url}")
        second = text[text.index("  - id: premier") : text.index("destinations:")]
        text = text.replace(
            "destinations:", second.replace("id: premier", "id: second") + "destinations:"
        )
        text += f"stop_at_first_delivery: {str(stop_first).lower()}\n"
        return parse_flow(text)

    lead = {
        "first_name": "A",
        "last_name": "B",
        "email": "a@example.com",
        "phone_1": "5125550123",
        "state": "TX",
        "tcpa_consent": True,
    }
    results = {}
    for stop_first in (False, True):
        flow = flow_with_two_buyers(f"{unique_id}{int(stop_first)}", stop_first)
        prepare_topics(stack, flow)
        stop = threading.Event()
        loops = [build_step_loop(stack, flow, s.id) for s in flow.steps]
        threads = [threading.Thread(target=lp.run, args=(stop,), daemon=True) for lp in loops]
        for t in threads:
            t.start()
        try:
            [lead_id] = publish_leads(stack, flow.id, [lead])
            events = wait_completed(stack, flow, 1, timeout=30)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        results[stop_first] = [e["type"] for e in events_by_lead(events)[lead_id]]
    head = ["source.submitted", "source.accepted", "filter.passed"]
    assert results[False] == [*head, "recipient.delivered", "recipient.delivered", "flow.completed"]
    assert results[True] == [*head, "recipient.delivered", "flow.completed"]
