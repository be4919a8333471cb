"""Buyer feedback: a conversion or a return reported after delivery, as new events.

Feedback never changes the delivery event it refers to: it adds
``feedback.received`` (what the buyer said) and ``feedback.processed`` (what it
changed). The lead's revenue after it is the price of every delivery that has
not been returned: a return takes back that one buyer's price, not the
revenue of a lead sold to several; returning a delivery twice takes it back once.

The new events continue the lead's timeline from its latest event, and their ids
come from the feedback message itself (``engine.ids.feedback_event_id``: when it
was published and its offset), so a redelivered feedback re-creates the same
events and a lead's feedback sorts after its steps, in the order it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.ids import feedback_event_id
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
    before = lead_revenue(events, returned)
    changed = []
    if feedback.type == "return" and feedback.event_id not in returned:
        changed.append("returned")
    if feedback.type == "conversion":
        changed.append("converted")
    if feedback.type == "return":
        returned.add(feedback.event_id)
    revenue = lead_revenue(events, returned)
    if revenue != before:
        changed.insert(0, "revenue")
    processed = EventDraft(
        "feedback.processed",
        "success",
        None,
        vars={**fields, TOTAL_REVENUE: revenue},
        entity_id=entity,
        revenue=revenue,
        # What a reader of the event alone should update: a second return of the same
        # delivery changes nothing, and says so with an empty list.
        metrics_changed=changed,
    )
    return StepResult([received, processed], proceed=False)


@dataclass(frozen=True, slots=True)
class FeedbackEvents:
    """What one feedback adds to its lead's timeline, and where it belongs."""

    lead_id: str
    flow_id: str
    flow_version: int
    # The delivery's: feedback is no step of the flow, so it does not count as one.
    step_count: int
    submitted_ms: int
    # The lead's state as it stands (its latest event, earlier feedback included): the
    # feedback's snapshot continues the timeline instead of going back to the delivery's.
    snapshot: Snapshot
    drafts: list[EventDraft]
    ids: list[str]
    # The delivery's retention (its expires_at less its timestamp): the lead's feedback is
    # kept as long as the rest of its flow's events; None when the delivery does not say.
    retention_ms: int | None = None


def feedback_events(
    feedback: Feedback,
    delivery: dict[str, Any] | None,
    timeline: Sequence[dict[str, Any]],
    published_ms: int,
    offset: int,
    received_ms: int,
) -> FeedbackEvents:
    """The events of ``feedback``, published at ``published_ms`` at ``offset`` of its
    partition and received at ``received_ms``, on the delivery it refers to (None if
    unknown) and its lead's ``timeline`` so far, oldest first.

    Raises ``FeedbackRejectedError`` when it refers to no delivery. The ids take the
    later of the publication and the lead's submission, so they sort after the lead's
    steps even when the publication time is missing or earlier than the lead's.
    """
    result = apply_feedback(feedback, delivery, timeline)
    assert delivery is not None  # apply_feedback refuses feedback on no delivery
    snapshot = dict((timeline[-1] if timeline else delivery)["vars"])
    lead_id = str(delivery["lead_id"])
    submitted = snapshot.get("submission.timestamp")
    submitted_ms = submitted if isinstance(submitted, int) else received_ms
    at_ms = max(published_ms, submitted_ms)
    ids = [feedback_event_id(lead_id, at_ms, offset, seq) for seq in range(len(result.events))]
    return FeedbackEvents(
        lead_id=lead_id,
        flow_id=str(delivery["flow_id"]),
        flow_version=int(delivery.get("flow_version") or 1),
        step_count=int(delivery.get("step_count") or 0),
        submitted_ms=submitted_ms,
        snapshot=snapshot,
        drafts=result.events,
        ids=ids,
        retention_ms=_retention_ms(delivery),
    )


def _retention_ms(event: dict[str, Any]) -> int | None:
    """How long ``event`` (LeadConduit JSON: ISO 8601 ``timestamp``/``expires_at``) is kept."""
    try:
        expires = datetime.fromisoformat(str(event["expires_at"]))
        at = datetime.fromisoformat(str(event["timestamp"]))
    except (KeyError, ValueError):
        return None
    ms = round((expires - at).total_seconds() * 1000)
    return ms if ms > 0 else None
