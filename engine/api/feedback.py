"""``POST /feedback``: a buyer reports a conversion or a return on a delivery.

The feedback is checked against the timeline projection first, so a buyer
learns at once that an event id is unknown (404 with the reason) instead of
the feedback vanishing; accepted feedback is published to the feedback topic
and becomes ``feedback.received``/``feedback.processed`` events.

A return takes a buyer's revenue away, so a key may report only on deliveries of the
recipients its ``feedback:<recipient>`` scopes name (``feedback:*``: any), of flows it
sees, and within the recipient's return window (``engine.api.return_windows``) of the
delivery. Another buyer's delivery is
a 404 like an unknown one: a buyer learns nothing of the others' deliveries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from engine.access.guard import AccessDeniedError, Authenticated
from engine.access.scopes import Principal
from engine.api.return_windows import ReturnWindows
from engine.runtime.feedback_worker import publish_feedback
from engine.settings import Settings
from engine.web.responses import answers, guarded
from projectors.api import Conn
from projectors.params import query_error
from projectors.queries import get_event

router = APIRouter()


class FeedbackBody(BaseModel):
    type: Literal["conversion", "return"]
    reason: str | None = Field(default=None, max_length=1000)
    value: str | float | None = None


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _may_give_feedback(principal: Principal) -> Principal:
    if principal.feedback_recipients() == frozenset():
        raise AccessDeniedError(403, "forbidden", "This key lacks a feedback:<recipient> scope")
    return principal


def _feedback_key(principal: Authenticated) -> Principal:
    return _may_give_feedback(principal)


def _delivered_at(delivery: dict[str, Any]) -> datetime | None:
    """When the delivery happened: its stored ``timestamp`` (ISO 8601, or epoch ms)."""
    value = delivery.get("timestamp")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


def _return_windows(request: Request) -> ReturnWindows:
    found = request.app.state.feedback_flows
    if found is None:
        found = request.app.state.feedback_flows = ReturnWindows(request.app.state.settings)
    assert isinstance(found, ReturnWindows)
    return found


def _check_delivery(
    principal: Principal, delivery: dict[str, Any], windows: ReturnWindows, event_id: str
) -> None:
    """Refuse feedback on someone else's delivery (404) or one past the return window (403)."""
    recipients = principal.feedback_recipients()
    theirs = recipients is None or delivery.get("step_id") in recipients
    if not theirs or not principal.sees_flow(delivery.get("flow_id")):
        raise HTTPException(404, detail=f"Unknown event: {event_id}")
    delivered = _delivered_at(delivery)
    if delivered is None:
        return
    days = windows.days(str(delivery.get("flow_id")), str(delivery.get("step_id")))
    if datetime.now(UTC) - delivered > timedelta(days=days):
        raise AccessDeniedError(
            403,
            "return_window_closed",
            f"Delivery {event_id} is over {days} days old: feedback on it is no longer taken",
        )


@router.post("/feedback", status_code=202, responses={**guarded(413), **answers(400, 404, 503)})
def post_feedback(
    body: FeedbackBody,
    event_id: Annotated[str, Query(min_length=1, max_length=64)],
    settings: Annotated[Settings, Depends(_settings)],
    principal: Annotated[Principal, Depends(_feedback_key)],
    windows: Annotated[ReturnWindows, Depends(_return_windows)],
    conn: Conn,  # a 503 when Postgres is unavailable, as on every read route
) -> dict[str, str]:
    delivery = get_event(conn, event_id)
    if delivery is None:
        raise HTTPException(404, detail=f"Unknown event: {event_id}")
    _check_delivery(principal, delivery, windows, event_id)
    if not str(delivery.get("type", "")).startswith("recipient."):
        # FastAPI's 422 shape, as every other 422 of the API (and its OpenAPI) has.
        raise query_error(
            "event_id",
            f"Event {event_id} is a {delivery.get('type')}, not a delivery to a buyer"
            " (recipient.*): feedback is on a delivery",
            event_id,
        )
    message = {"event_id": event_id, **body.model_dump(exclude_none=True)}
    try:
        publish_feedback(settings, orjson.dumps(message), str(delivery["lead_id"]).encode())
    except KafkaException as exc:
        raise HTTPException(503, detail="Kafka is unavailable; the feedback was not taken") from exc
    return {"status": "accepted", "event_id": event_id, "lead_id": str(delivery["lead_id"])}
