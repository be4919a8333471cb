"""Buyer feedback: a conversion or a return reported after delivery, as new events.

Feedback never changes the delivery event it refers to: it adds
``feedback.received`` (what the buyer said) and ``feedback.processed`` (what it
changed). The lead's revenue after it is the price of every delivery that has
not been returned: a return takes back that one buyer's price, not the
revenue of a lead sold to several; returning a delivery twice takes it back once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.steps.base import TOTAL_REVENUE, EventDraft, Snapshot, StepResult

FEEDBACK_STEP_ID = "feedback"


class Feedback(BaseModel):
    """One feedback message, as published on the feedback topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1, max_length=64)
    type: Literal["conversion", "return"]
    reason: str | None = Field(default=None, max_length=1000)
    value: str | float | None = None


class FeedbackRejectedError(ValueError):
    """The feedback cannot be applied; the reason goes back to whoever sent it."""


def parse_feedback(raw: bytes) -> Feedback:
    try:
        return Feedback.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise FeedbackRejectedError(f"Invalid feedback: {problems}") from None


def lead_revenue(timeline: Sequence[dict[str, Any]], returned: set[str]) -> float:
    """What the buyers pay for the lead: every delivery's price but the returned ones'."""
    return sum(
        float(e.get("revenue") or 0.0)
        for e in timeline
        if e.get("type") == "recipient.delivered" and e.get("id") not in returned
    )


def returned_deliveries(timeline: Sequence[dict[str, Any]]) -> set[str]:
    """Ids of the deliveries earlier feedback returned."""
    return {
        str(e["vars"].get("feedback.recipient_event_id"))
        for e in timeline
        if e.get("type") == "feedback.processed" and e["vars"].get("feedback.type") == "return"
    }


def apply_feedback(
    feedback: Feedback,
    delivery: dict[str, Any] | None,
    timeline: Sequence[dict[str, Any]] | None = None,
) -> StepResult:
    """``delivery`` is the recipient event the feedback refers to (None if unknown);
    ``timeline`` the lead's events so far (default: the delivery alone)."""
    if delivery is None:
        raise FeedbackRejectedError(f"Unknown event: {feedback.event_id}")
    if not str(delivery.get("type", "")).startswith("recipient."):
        raise FeedbackRejectedError(f"Event {feedback.event_id} is not a delivery to a buyer")
    fields: Snapshot = {
        "feedback.type": feedback.type,
        "feedback.reason": feedback.reason,
        "feedback.recipient_event_id": feedback.event_id,
        # Always set: the snapshot continues from the lead's latest event, which may hold
        # an earlier feedback's value.
        "feedback.value": feedback.value,
    }
    entity = delivery.get("step_id")
    received = EventDraft(
        "feedback.received", "success", feedback.reason, vars=fields, entity_id=entity
    )
    events = list(timeline) if timeline else [delivery]
    returned = returned_deliveries(events)
    if feedback.type == "return":
        returned.add(feedback.event_id)
    revenue = lead_revenue(events, returned)
    processed = EventDraft(
        "feedback.processed",
        "success",
        None,
        vars={**fields, TOTAL_REVENUE: revenue},
        entity_id=entity,
        revenue=revenue,
    )
    return StepResult([received, processed], proceed=False)
