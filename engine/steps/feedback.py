"""Buyer feedback: a conversion or a return reported after delivery, as new events.

Feedback never changes the delivery event it refers to: it adds
``feedback.received`` (what the buyer said) and ``feedback.processed`` (what it
changed: a return takes the lead's revenue back to zero).
"""

from __future__ import annotations

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


def apply_feedback(feedback: Feedback, delivery: dict[str, Any] | None) -> StepResult:
    """``delivery`` is the recipient event the feedback refers to (None if unknown)."""
    if delivery is None:
        raise FeedbackRejectedError(f"Unknown event: {feedback.event_id}")
    if not str(delivery.get("type", "")).startswith("recipient."):
        raise FeedbackRejectedError(f"Event {feedback.event_id} is not a delivery to a buyer")
    fields: Snapshot = {
        "feedback.type": feedback.type,
        "feedback.reason": feedback.reason,
        "feedback.recipient_event_id": feedback.event_id,
    }
    if feedback.value is not None:
        fields["feedback.value"] = feedback.value
    entity = delivery.get("step_id")
    received = EventDraft(
        "feedback.received", "success", feedback.reason, vars=fields, entity_id=entity
    )
    revenue = 0.0 if feedback.type == "return" else float(delivery.get("revenue") or 0.0)
    processed = EventDraft(
        "feedback.processed",
        "success",
        None,
        vars={**fields, TOTAL_REVENUE: revenue},
        entity_id=entity,
        revenue=revenue,
    )
    return StepResult([received, processed], proceed=False)
