"""Buyer feedback on the lead's timeline: which lead and flow it belongs to, the snapshot it
continues from, and ids that come from the feedback message itself (so a redelivery
re-creates the same events, and a lead's feedback sorts after its steps as it was given)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.ids import feedback_event_id
from engine.steps.feedback import (
    Feedback,
    FeedbackRejectedError,
    apply_feedback,
    feedback_events,
)
from tests.factories import make_lead_events

LEAD_ID = "01KB0000000000000000000001"
SUBMITTED_MS = 1_764_000_000_000
STEPS = make_lead_events(flow_id="solar", lead_id=LEAD_ID, submitted_ms=SUBMITTED_MS)
DELIVERY = STEPS[3]
RECEIVED_MS = SUBMITTED_MS + 86_400_000
PUBLISHED_MS = RECEIVED_MS - 30


def conversion(event_id: str = DELIVERY["id"]) -> Feedback:
    return Feedback(event_id=event_id, type="conversion", value=12.0)


def test_the_feedback_belongs_to_the_deliverys_lead_flow_and_version() -> None:
    delivery = {**DELIVERY, "flow_version": 4}
    added = feedback_events(conversion(), delivery, STEPS, PUBLISHED_MS, 9, RECEIVED_MS)
    assert (added.lead_id, added.flow_id, added.flow_version) == (LEAD_ID, "solar", 4)
    assert added.submitted_ms == SUBMITTED_MS
    assert [d.type for d in added.drafts] == ["feedback.received", "feedback.processed"]


def test_feedback_keeps_the_deliverys_step_count_as_it_is_no_step() -> None:
    added = feedback_events(conversion(), DELIVERY, STEPS, PUBLISHED_MS, 9, RECEIVED_MS)
    assert added.step_count == DELIVERY["step_count"] == 3


def test_the_ids_come_from_the_messages_publication_time_and_offset() -> None:
    added = feedback_events(conversion(), DELIVERY, STEPS, PUBLISHED_MS, 9, RECEIVED_MS)
    assert added.ids == [
        feedback_event_id(LEAD_ID, PUBLISHED_MS, 9, 0),
        feedback_event_id(LEAD_ID, PUBLISHED_MS, 9, 1),
    ]
    again = feedback_events(conversion(), DELIVERY, STEPS, PUBLISHED_MS, 9, RECEIVED_MS + 5_000)
    assert again.ids == added.ids  # received again later: the same events


def test_feedback_sorts_after_the_leads_steps_even_published_before_its_submission() -> None:
    """A missing (-1) or skewed publication time never puts feedback before the delivery."""
    for published in (-1, 0, SUBMITTED_MS - 60_000):
        added = feedback_events(conversion(), DELIVERY, STEPS, published, 9, RECEIVED_MS)
        assert added.ids[0] == feedback_event_id(LEAD_ID, SUBMITTED_MS, 9, 0)
        assert min(added.ids) > max(e["id"] for e in STEPS)


def test_a_leads_feedback_sorts_in_the_order_it_was_given() -> None:
    first = feedback_events(conversion(), DELIVERY, STEPS, PUBLISHED_MS, 40_000, RECEIVED_MS)
    later = feedback_events(conversion(), DELIVERY, STEPS, PUBLISHED_MS + 1, 5, RECEIVED_MS)
    assert first.ids[0] < first.ids[1] < later.ids[0] < later.ids[1]


def test_the_feedback_continues_from_the_leads_latest_event() -> None:
    latest = {**STEPS[-1], "vars": {**STEPS[-1]["vars"], "feedback.type": "return"}}
    added = feedback_events(conversion(), DELIVERY, [*STEPS, latest], PUBLISHED_MS, 9, RECEIVED_MS)
    assert added.snapshot == latest["vars"]
    assert added.snapshot is not latest["vars"]  # a copy: the timeline is never changed


def test_without_a_timeline_the_feedback_continues_from_the_delivery() -> None:
    added = feedback_events(conversion(), DELIVERY, [], PUBLISHED_MS, 9, RECEIVED_MS)
    assert added.snapshot == DELIVERY["vars"]


def test_a_lead_without_a_submission_time_is_placed_at_reception() -> None:
    unknown: dict[str, Any] = {**DELIVERY["vars"], "submission.timestamp": None}
    delivery = {**DELIVERY, "vars": unknown}
    added = feedback_events(conversion(), delivery, [delivery], -1, 9, RECEIVED_MS)
    assert added.submitted_ms == RECEIVED_MS
    assert added.ids[0] == feedback_event_id(LEAD_ID, RECEIVED_MS, 9, 0)


@pytest.mark.parametrize(
    ("delivery", "reason"),
    [
        (None, "Unknown event: E404"),
        ({**STEPS[1], "id": "E404"}, "Event E404 is not a delivery to a buyer"),
    ],
)
def test_feedback_on_no_delivery_is_refused_with_the_reason(
    delivery: dict[str, Any] | None, reason: str
) -> None:
    with pytest.raises(FeedbackRejectedError, match=reason):
        feedback_events(conversion("E404"), delivery, STEPS, PUBLISHED_MS, 9, RECEIVED_MS)


def test_feedback_processed_says_which_metrics_the_feedback_changed() -> None:
    converted = apply_feedback(conversion(), DELIVERY, STEPS).last
    assert converted.metrics_changed == ["converted"]
    returned = apply_feedback(Feedback(event_id=DELIVERY["id"], type="return"), DELIVERY, STEPS)
    assert returned.last.metrics_changed == ["revenue", "returned"]
    # The same delivery returned again: nothing changes, and the event says so.
    timeline = [*STEPS, _processed(returned.last.vars)]
    again = apply_feedback(Feedback(event_id=DELIVERY["id"], type="return"), DELIVERY, timeline)
    assert again.last.metrics_changed == []


def _processed(vars_: dict[str, Any]) -> dict[str, Any]:
    return {"type": "feedback.processed", "vars": vars_}
