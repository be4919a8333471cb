"""Flows as data: applied to a compacted topic, followed by running workers without a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.ops.submit import publish_leads
from engine.runtime.registry import FlowRegistry, apply_flow, delete_flow
from engine.runtime.step_worker import build_step_loop
from engine.settings import Settings
from tests.factories import make_flow
from tests.kafka_helpers import events_by_lead, read_events
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

LEAD = {"first_name": "A", "last_name": "B", "phone_1": "5125550123", "tcpa_consent": True}


@pytest.fixture(autouse=True)
def _forget_test_flows(stack: Settings, unique_id: str) -> Iterator[None]:
    """Tests apply flows to the shared registry; tombstone them so no later
    ``leadflow run`` starts workers for flows whose topics are gone."""
    yield
    for flow_id in (unique_id, f"{unique_id}-b"):
        delete_flow(stack, flow_id)


def with_states(flow: Flow, states: list[str]) -> Flow:
    """The same flow with its service-area filter allowing ``states``."""
    data = flow.model_dump(mode="json")
    data["steps"][1]["settings"]["rules"][0]["value"] = states
    return Flow.model_validate(data)


def test_apply_records_created_then_unchanged_then_updated(stack: Settings, unique_id: str) -> None:
    flow = make_flow(unique_id, "http://127.0.0.1:9/leads")
    first = apply_flow(stack, flow)
    assert (first.type, first.flow.version) == ("flow.created", 1)
    assert f"leadflow.{unique_id}.events.premier" in first.created_topics
    assert apply_flow(stack, flow).type == "flow.unchanged"
    changed = apply_flow(stack, with_states(flow, ["TX", "WY"]))
    assert (changed.type, changed.flow.version) == ("flow.updated", 2)
    registry = FlowRegistry(stack)
    try:
        registry.refresh()
        latest = registry.get(unique_id)
    finally:
        registry.close()
    assert latest is not None
    assert latest.version == 2
    assert latest == changed.flow


def test_running_steps_pick_up_a_new_version_without_restart(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    v1 = apply_flow(stack, with_states(make_flow(unique_id, buyer.url), ["TX"])).flow
    registry = FlowRegistry(stack)
    registry.refresh()
    stop = threading.Event()
    loops = [build_step_loop(stack, v1, s.id, registry=FlowRegistry(stack)) for s in v1.steps]
    threads = [threading.Thread(target=lp.run, args=(stop,), daemon=True) for lp in loops]
    for t in threads:
        t.start()
    try:
        [before] = publish_leads(stack, v1.id, [{**LEAD, "email": "a@example.com", "state": "WY"}])
        wait_completed(stack, v1, 1)
        apply_flow(stack, with_states(v1, ["TX", "WY"]))
        time.sleep(4)  # the loops look at the registry every 2 s between batches
        [after] = publish_leads(stack, v1.id, [{**LEAD, "email": "b@example.com", "state": "WY"}])
        wait_completed(stack, v1, 2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        registry.close()
    timelines = events_by_lead(read_events(stack, v1))
    assert [e["type"] for e in timelines[before]][2] == "filter.failed"
    assert {e["flow_version"] for e in timelines[before]} == {1}
    assert [e["type"] for e in timelines[after]][2:] == [
        "filter.passed",
        "recipient.delivered",
        "flow.completed",
    ]
    assert {e["flow_version"] for e in timelines[after][2:]} == {2}


def with_step_before_premier(flow: Flow) -> Flow:
    """The next version with a consent filter inserted before the buyer: premier's input
    moves from service-area's events to the new step's."""
    data = flow.model_dump(mode="json")
    consent = {
        "id": "consent",
        "kind": "filter",
        "name": "Consent",
        "settings": {
            "rules": [
                {"name": "Consent", "field": "lead.tcpa_consent", "op": "equals", "value": True}
            ]
        },
    }
    data["steps"].insert(2, consent)
    data["version"] = flow.version + 1
    return Flow.model_validate(data)


def run_loops(stack: Settings, flow: Flow, stop: threading.Event) -> list[threading.Thread]:
    loops = [build_step_loop(stack, flow, s.id, registry=FlowRegistry(stack)) for s in flow.steps]
    threads = [threading.Thread(target=lp.run, args=(stop,), daemon=True) for lp in loops]
    for t in threads:
        t.start()
    return threads


def test_a_step_whose_input_moved_in_a_new_version_reads_its_new_input(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    """Its worker is rebuilt under the same group and instance. A static member that rejoins
    with other topics is handed its old partitions and no rebalance (KAFKA-12759), and
    librdkafka then consumed nothing, for good: the instance id now names its topics
    (``static_instance_id``), so it joins as a new member and the group rebalances."""
    v1 = apply_flow(stack, with_states(make_flow(unique_id, buyer.url), ["TX", "WY"])).flow
    stop = threading.Event()
    threads = run_loops(stack, v1, stop)
    try:
        publish_leads(stack, v1.id, [{**LEAD, "email": "a@example.com", "state": "WY"}])
        wait_completed(stack, v1, 1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    v2 = apply_flow(stack, with_step_before_premier(v1)).flow
    stop = threading.Event()
    threads = run_loops(stack, v2, stop)
    try:
        [after] = publish_leads(stack, v2.id, [{**LEAD, "email": "b@example.com", "state": "WY"}])
        # Within a minute: the old static members leave the group when their sessions
        # (10 s) time out, and the rebalance that follows assigns the moved input.
        wait_completed(stack, v2, 2, timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    timeline = events_by_lead(read_events(stack, v2))[after]
    assert [(e["step_id"], e["type"]) for e in timeline] == [
        ("source", "source.submitted"),
        ("source", "source.accepted"),
        ("service-area", "filter.passed"),
        ("consent", "filter.passed"),
        ("premier", "recipient.delivered"),
        ("premier", "flow.completed"),
    ]


def wait_completed(stack: Settings, flow: Flow, n: int, timeout: float = 30) -> None:
    wait_until(
        lambda: sum(e["type"] == "flow.completed" for e in read_events(stack, flow, 5)),
        timeout,
        f"{n} leads to complete",
        until=lambda completed: completed >= n,
        every=0.5,
    )


def test_bad_configuration_is_refused_at_apply_with_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: bad\nname: Bad\nsteps:\n"
        "  - {id: s, kind: source, name: S, settings: {fields: []}}\n"
        "  - {id: x, kind: teleport, name: X, settings: {}}\n"
    )
    result = CliRunner().invoke(app, ["flow", "apply", str(bad)])
    assert result.exit_code != 0
    message = str(result.exception) + result.output
    assert "line 5" in message
    assert "steps.1" in message
    assert parse_flow  # the same validation as loading a file


RUN_SUPERVISOR = """
import sys, threading
from engine.runtime.stopping import install_stop_handlers
from engine.supervisor import supervise
from engine.settings import get_settings
from engine.state.postgres import migrate_state
migrate_state(get_settings())
stop = threading.Event()
install_stop_handlers(stop)
supervise(sys.argv[1:], None, stop)
"""


def test_leadflow_run_starts_workers_for_flows_applied_while_it_runs(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    import os
    import signal
    import subprocess
    import sys

    first = make_flow(unique_id, buyer.url)
    second = make_flow(f"{unique_id}-b", buyer.url)
    roles = [f"{f.id}:{s.id}" for f in (first, second) for s in f.steps]
    apply_flow(stack, first)
    env = {**os.environ, "LEADFLOW_LOG_LEVEL": "WARNING"}
    # What `leadflow run ROLE...` runs, without its start-time check that every role names
    # an applied flow (which refuses the second flow's roles before it is applied).
    workers = subprocess.Popen(
        [sys.executable, "-c", RUN_SUPERVISOR, *roles],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        publish_leads(stack, first.id, [{**LEAD, "email": "a@example.com", "state": "TX"}])
        wait_completed(stack, first, 1)
        apply_flow(stack, second)  # applied while the workers run
        publish_leads(stack, second.id, [{**LEAD, "email": "b@example.com", "state": "TX"}])
        wait_completed(stack, second, 1)
    finally:
        os.killpg(workers.pid, signal.SIGTERM)
        workers.wait(60)
        delete_flow(stack, first.id)
        delete_flow(stack, second.id)
    assert workers.returncode == 0
    registry = FlowRegistry(stack)
    try:
        registry.refresh()
        assert registry.get(first.id) is None  # tombstoned
    finally:
        registry.close()
