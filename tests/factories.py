"""Factories for valid lead events, for tests that need events without running a flow."""

from __future__ import annotations

from typing import Any

from engine.events import LeadEvent, StepIdentity, Timing, stamp_events
from engine.ids import new_lead_id
from engine.steps.base import EventDraft

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
