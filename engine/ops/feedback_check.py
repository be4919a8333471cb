"""What ``leadflow feedback`` checks before it publishes: the worker's own rules, applied early."""

from __future__ import annotations

from engine.errors import LeadflowError
from engine.settings import Settings
from engine.steps.feedback import Feedback, FeedbackRejectedError, apply_feedback, parse_feedback
from projectors.queries import get_event
from projectors.store import connect


class FeedbackRefusedError(LeadflowError):
    """Feedback the worker would reject, refused before it is published."""


def parse_or_refuse(body: bytes) -> Feedback:
    """``body`` as the worker will read it, or ``FeedbackRefusedError`` with the worker's reason."""
    try:
        return parse_feedback(body)
    except FeedbackRejectedError as exc:
        raise FeedbackRefusedError(str(exc)) from None


def check_feedback(settings: Settings, feedback: Feedback) -> str:
    """Refuse feedback on an event the worker would reject it for (unknown to the timeline
    projection, or not a delivery), with the same reason, by the same decision
    (``apply_feedback``): otherwise it is published, "accepted", and only shows up later on
    ``leadflow.feedback.rejected``. Returns the delivery's lead id: the feedback's key, so a
    lead's feedback shares a partition and is applied in the order it was given."""
    with connect(settings, application_name="leadflow-feedback-check") as conn:
        delivery = get_event(conn, feedback.event_id)
    try:
        apply_feedback(feedback, delivery)
    except FeedbackRejectedError as exc:
        raise FeedbackRefusedError(
            f"{exc} (not published; --no-check publishes it anyway, e.g. for an event "
            "the timeline projection has not caught up with)"
        ) from None
    assert delivery is not None  # apply_feedback refuses an unknown event
    return str(delivery["lead_id"])
