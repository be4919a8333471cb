"""Enhancement steps on a real broker: appended data reaches later steps; a service
that says no or fails lets the lead go on, unless the enhancement is required."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.ops.submit import publish_leads
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from tests.kafka_helpers import events_by_lead, read_events, run_steps, wait_for_completion

pytestmark = pytest.mark.stack

TIMEOUT_MS = 300


def lead(email: str) -> dict[str, Any]:
    return {"first_name": "Ada", "email": email, "phone_1": "(512) 555-0123"}


def enhanced_flow(flow_id: str, service_url: str, buyer_url: str, required: bool) -> Flow:
    """source -> phone check (enhancement) -> a filter on what it appended -> buyer."""
    return parse_flow(
        f"""
id: {flow_id}
name: Enhanced {flow_id}
topics: {{partitions: 2}}
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      fields:
        - {{name: first_name}}
        - {{name: email, type: email, required: true}}
        - {{name: phone_1, type: phone, required: true}}
  - id: phone-check
    kind: enhancement
    name: Phone check
    settings:
      url: {service_url}
      key: phone_check
      timeout_ms: {TIMEOUT_MS}
      required: {str(required).lower()}
      mapping: {{phone: lead.phone_1, email: lead.email}}
  - id: no-voip
    kind: filter
    name: No VoIP
    settings:
      rules:
        - {{name: No VoIP, field: appended.phone_check.line_type, op: not_equals, value: voip}}
  - id: premier
    kind: recipient
    name: Premier
    settings:
      url: {buyer_url}
      mapping: {{email: lead.email, carrier: appended.phone_check.carrier}}
""",
        f"{flow_id}.yaml",
    )


@pytest.fixture
def service() -> Iterator[BuyerServer]:
    """The demo server's phone check; ``+hang`` answers after 1 s, long after the timeout."""
    server = BuyerServer(port=0, mix=False, slow_seconds=1.0)
    server.start_in_thread()
    yield server
    server.stop()


def run_leads(
    settings: Settings, flow: Flow, leads: list[dict[str, Any]], without: str | None = None
) -> list[list[dict[str, Any]]]:
    """Each lead's events, in the order of ``leads``, once every lead completed (with no
    worker for step ``without``)."""
    prepare_topics(settings, flow)
    stop = threading.Event()
    threads = run_steps(settings, flow, stop, without=without)
    try:
        ids = publish_leads(settings, flow.id, leads)
        wait_for_completion(settings, flow, len(ids), timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    timelines = events_by_lead(read_events(settings, flow))
    assert set(timelines) == set(ids)
    return [timelines[i] for i in ids]


ACCEPTED = ["source.submitted", "source.accepted"]
DELIVERED = ["filter.passed", "recipient.delivered", "flow.completed"]


def test_appended_data_reaches_filters_and_buyers_and_problems_let_the_lead_go_on(
    stack: Settings, unique_id: str, buyer: BuyerServer, service: BuyerServer
) -> None:
    flow = enhanced_flow(unique_id, service.phone_check_url, buyer.url, required=False)
    found, voip, unknown, down, hung = run_leads(
        stack,
        flow,
        [
            lead("ada@example.com"),
            lead("ada+voip@example.com"),
            lead("ada+unknown@example.com"),
            lead("ada+down@example.com"),
            lead("ada+hang@example.com"),
        ],
    )
    types = {
        name: [e["type"] for e in timeline]
        for name, timeline in [
            ("found", found),
            ("voip", voip),
            ("unknown", unknown),
            ("down", down),
            ("hung", hung),
        ]
    }
    assert types == {
        "found": [*ACCEPTED, "enhancement.success", *DELIVERED],
        "voip": [*ACCEPTED, "enhancement.success", "filter.failed", "flow.completed"],
        "unknown": [*ACCEPTED, "enhancement.failure", *DELIVERED],
        "down": [*ACCEPTED, "enhancement.error", *DELIVERED],
        "hung": [*ACCEPTED, "enhancement.error", *DELIVERED],
    }

    # Success: the answer is appended, carried in the snapshot, and used downstream.
    checked, passed, delivered, completed = found[2:]
    carrier = checked["appended"]["appended.phone_check.carrier"]
    assert carrier in ("Verizon", "AT&T", "T-Mobile", "US Cellular")
    assert checked["appended"]["appended.phone_check.line_type"] in ("mobile", "landline")
    assert checked["appended"]["appended.phone_check.location.area_code"] == "512"
    assert checked["key"] == "phone_check" and checked["step_id"] == "phone-check"
    assert orjson.loads(checked["request"]["body"]) == {
        "phone": "5125550123",
        "email": "ada@example.com",
    }
    assert checked["request"]["headers"]["Idempotency-Key"] == checked["id"]
    assert checked["response"]["status"] == 200
    for later in (passed, delivered, completed):
        assert later["vars"]["appended.phone_check.carrier"] == carrier
    assert orjson.loads(delivered["request"]["body"]) == {
        "email": "ada@example.com",
        "carrier": carrier,
    }
    assert completed["outcome"] == "success"

    # The filter decided on appended data: a VoIP line goes no further.
    assert "'voip'" in voip[3]["reason"] and voip[-1]["outcome"] == "failure"

    # No data, or no answer: the event says why, nothing is appended, the lead goes on.
    reasons = {
        "unknown": (unknown[2], "failure", "Phone not found"),
        "down": (down[2], "error", "Service answered HTTP 503"),
        "hung": (hung[2], "error", f"Service timeout after {TIMEOUT_MS}ms"),
    }
    for name, (event, outcome, reason) in reasons.items():
        assert (event["outcome"], event["reason"], event["appended"]) == (outcome, reason, {}), name
        assert not any(k.startswith("appended.phone_check") for k in event["vars"]), name
        assert event["key"] == "phone_check", name
    assert hung[2]["response"] is None and hung[2]["wait_ms"] >= TIMEOUT_MS
    assert all(timeline[-1]["outcome"] == "success" for timeline in (unknown, down, hung))

    # One call per lead, keyed by its enhancement event; buyers only see leads that passed.
    timelines = (found, voip, unknown, down, hung)
    assert sorted(service.enhanced) == sorted(t[2]["id"] for t in timelines)
    assert sorted(buyer.received) == sorted(t[4]["id"] for t in (found, unknown, down, hung))


def test_a_required_enhancement_stops_the_lead_it_cannot_enhance(
    stack: Settings, unique_id: str, buyer: BuyerServer, service: BuyerServer
) -> None:
    flow = enhanced_flow(unique_id, service.phone_check_url, buyer.url, required=True)
    found, unknown, down = run_leads(
        stack,
        flow,
        [lead("ada@example.com"), lead("ada+unknown@example.com"), lead("ada+down@example.com")],
    )
    assert [e["type"] for e in found] == [*ACCEPTED, "enhancement.success", *DELIVERED]
    assert [e["type"] for e in unknown] == [*ACCEPTED, "enhancement.failure", "flow.completed"]
    assert [e["type"] for e in down] == [*ACCEPTED, "enhancement.error", "flow.completed"]
    assert (down[-1]["outcome"], down[-1]["reason"]) == ("error", "Service answered HTTP 503")
    assert (unknown[-1]["outcome"], unknown[-1]["reason"]) == ("failure", "Phone not found")
    assert down[-1]["step_id"] == unknown[-1]["step_id"] == "phone-check"
    assert sorted(buyer.received) == [found[4]["id"]]


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "own-worker"])
def test_the_filter_after_an_enhancement_decides_in_its_worker(
    stack: Settings, unique_id: str, buyer: BuyerServer, service: BuyerServer, fuse: bool
) -> None:
    """Fused (the default), the filter's leads are decided in the enhancement's worker: with
    no filter worker at all they still reach the buyer, and the filter's events are on its
    own topic. Unfused, the filter's worker is needed; the events are the same either way."""
    settings = stack.model_copy(update={"fuse_pure_steps": fuse})
    flow = enhanced_flow(unique_id, service.phone_check_url, buyer.url, required=False)
    leads = [lead("ada@example.com"), lead("ada+voip@example.com")]
    found, voip = run_leads(settings, flow, leads, without="no-voip" if fuse else None)
    assert [e["type"] for e in found] == [*ACCEPTED, "enhancement.success", *DELIVERED]
    assert [e["type"] for e in voip] == [
        *ACCEPTED,
        "enhancement.success",
        "filter.failed",
        "flow.completed",
    ]
    assert found[3]["step_id"] == "no-voip" and found[3]["lag_ms"] >= 0
    decided = [e["type"] for e in read_events(settings, flow) if e["step_id"] == "no-voip"]
    assert sorted(decided) == ["filter.failed", "filter.passed", "flow.completed"]
