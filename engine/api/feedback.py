"""``POST /feedback``: a buyer reports a conversion or a return on a delivery.

The feedback is checked against the timeline projection first, so a buyer
learns at once that an event id is unknown (404 with the reason) instead of
the feedback vanishing; accepted feedback is published to the feedback topic
and becomes ``feedback.received``/``feedback.processed`` events.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from engine.runtime.feedback_worker import publish_feedback
from engine.settings import Settings
from engine.web.responses import answers
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


@router.post("/feedback", status_code=202, responses=answers(400, 404, 503))
def post_feedback(
    body: FeedbackBody,
    event_id: Annotated[str, Query(min_length=1, max_length=64)],
    settings: Annotated[Settings, Depends(_settings)],
    conn: Conn,  # a 503 when Postgres is unavailable, as on every read route
) -> dict[str, str]:
    delivery = get_event(conn, event_id)
    if delivery is None:
        raise HTTPException(404, detail=f"Unknown event: {event_id}")
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
