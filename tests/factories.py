"""Factories for valid lead events, for tests that need events without running a flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.events import LeadEvent, StepIdentity, Timing, stamp_events
from engine.flows import Flow, parse_flow
from engine.ids import new_lead_id
from engine.steps.base import EventDraft

DEMO_FLOW = Path(__file__).parent / "flows" / "basic.yaml"

_STEPS = ["source", "service-area", "premier"]


def make_lead_events(
    flow_id: str = "demo", lead_id: str | None = None, submitted_ms: int = 1_764_000_000_000
) -> list[LeadEvent]:
    """A delivered lead's timeline: submitted, accepted, filter passed, delivered, completed."""
    lead_id = lead_id or new_lead_id(submitted_ms)
    snapshot: dict[str, Any] = {
        "lead.id": lead_id,
        "submission.timestamp": submitted_ms,
        "lead.email": "ada@example.com",
        "lead.email.valid": True,
        "lead.state": "TX",
    }
    plan = [
        [
            EventDraft("source.submitted", "success", entity_id="source"),
            EventDraft("source.accepted", "success", cost=2.5, entity_id="source"),
        ],
        [EventDraft("filter.passed", "success", entity_id="service-area")],
        [
            EventDraft(
                "recipient.delivered",
                "success",
                revenue=30.0,
                entity_id="premier",
                appended={"appended.premier.id": "B-1"},
                vars={"appended.premier.id": "B-1"},
            ),
            EventDraft("flow.completed", "success", cost=2.5, revenue=30.0, entity_id=flow_id),
        ],
    ]
    events: list[LeadEvent] = []
    for index, drafts in enumerate(plan):
        who = StepIdentity(
            flow_id, 1, _STEPS[index], _STEPS[index].title(), index, "test-host", "0.1.0"
        )
        start = submitted_ms + 10 * index
        events += stamp_events(
            drafts, who, lead_id, submitted_ms, snapshot, Timing(start, start + 3, 1)
        )
    return events


def make_event(**overrides: Any) -> LeadEvent:
    event = make_lead_events()[0]
    event.update(overrides)
    return event


def make_flow(flow_id: str, buyer_url: str, partitions: int = 3) -> Flow:
    """The demo flow under a fresh id (fresh topics and groups), delivering to ``buyer_url``."""
    text = DEMO_FLOW.read_text(encoding="utf-8")
    text = text.replace("id: demo\n", f"id: {flow_id}\n", 1)
    text = text.replace("url: http://127.0.0.1:8765/leads", f"url: {buyer_url}")
    text = text.replace("partitions: 3", f"partitions: {partitions}")
    text = text.replace("prefix: demo", f"prefix: {flow_id}")
    return parse_flow(text, f"{flow_id}.yaml")


def write_flow(path: Path, flow: Flow) -> Path:
    path.write_text(yaml.safe_dump(flow.model_dump(mode="json")), encoding="utf-8")
    return path
