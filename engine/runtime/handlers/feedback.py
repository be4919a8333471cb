"""The feedback worker's I/O: find the delivery a feedback refers to, record the new events.

The delivery is looked up in the timeline projection (Postgres), which is
itself rebuilt from the events: through the ``Deliveries`` the process hands
in (``projectors.deliveries``), as the projection sits above the runtime. The
new events go to the flow's
``events.feedback`` topic, so the projector and the streamers see them like
any other event. Unknown or malformed feedback goes to the rejected topic
with its reason - never silently dropped.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog
from confluent_kafka import Message

from engine import __version__
from engine.errors import TransientStepError
from engine.events import StepIdentity, Timing, stamp_events
from engine.ids import FEEDBACK_STEP_INDEX, feedback_event_id
from engine.runtime.handlers.base import Headers, Record, now_ms
from engine.settings import Settings
from engine.steps.feedback import (
    FEEDBACK_STEP_ID,
    FeedbackRejectedError,
    apply_feedback,
    parse_feedback,
)
from engine.topics import ERROR_HEADER, TYPE_HEADER, events_topic
from schemas.codec import EventCodec

log = structlog.get_logger(__name__)

FEEDBACK_TOPIC = "leadflow.feedback"  # the default of ``Settings.feedback_topic``
FEEDBACK_REJECTED_TOPIC = "leadflow.feedback.rejected"


def rejected_topic(feedback_topic: str) -> str:
    """Where feedback that cannot be applied goes, with its reason."""
    return f"{feedback_topic}.rejected"


Event = dict[str, Any]


class Deliveries(Protocol):
    """Where the worker finds what a feedback refers to (``projectors.deliveries``)."""

    def find(self, event_id: str) -> tuple[Event | None, list[Event]]:
        """The event (None if unknown) and its lead's timeline so far, oldest first."""
        ...

    def close(self) -> None: ...


class FeedbackHandler:
    def __init__(self, settings: Settings, codec: EventCodec, deliveries: Deliveries) -> None:
        self.settings = settings
        self.codec = codec
        self.deliveries = deliveries

    def _lookup(self, event_id: str) -> tuple[Event | None, list[Event]]:
        """The event, and its lead's timeline (for the lead's revenue after the feedback)."""
        try:
            return self.deliveries.find(event_id)
        except Exception as exc:  # the projection is unreachable: decide later, not wrongly
            raise TransientStepError(
                f"timeline projection unavailable: {type(exc).__name__}"
            ) from exc

    def handle(self, msg: Message) -> list[Record]:
        start = now_ms()
        raw = msg.value() or b""
        try:
            feedback = parse_feedback(raw)
            delivery, timeline = self._lookup(feedback.event_id)
            result = apply_feedback(feedback, delivery, timeline)
        except FeedbackRejectedError as exc:
            # The sender was told "published" long ago: the log is where an operator sees why.
            log.warning(
                "feedback rejected",
                reason=str(exc),
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                to=rejected_topic(self.settings.feedback_topic),
            )
            headers: Headers = [(ERROR_HEADER, str(exc).encode())]
            return [Record(msg.key(), raw, headers, rejected_topic(self.settings.feedback_topic))]
        assert delivery is not None
        # The lead's state as it stands (its latest event, earlier feedback included), so
        # the feedback's snapshot continues the timeline instead of going back to the
        # delivery's.
        snapshot = dict((timeline[-1] if timeline else delivery)["vars"])
        lead_id, flow_id = str(delivery["lead_id"]), str(delivery["flow_id"])
        submitted = snapshot.get("submission.timestamp")
        submitted_ms = submitted if isinstance(submitted, int) else start
        _, produced_ms = msg.timestamp()
        # Deterministic ids from the feedback message itself (its time and offset in the
        # log never change): a redelivered feedback re-creates the same events, which
        # consumers de-duplicate, and a lead's feedback sorts in the order it was given.
        published_ms = max(produced_ms, submitted_ms)
        ids = [
            feedback_event_id(lead_id, published_ms, msg.offset() or 0, seq)
            for seq in range(len(result.events))
        ]
        who = StepIdentity(
            flow_id,
            int(delivery.get("flow_version") or 1),
            FEEDBACK_STEP_ID,
            "Feedback",
            FEEDBACK_STEP_INDEX,
            self.settings.instance_id,
            __version__,
        )
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        events = stamp_events(result.events, who, lead_id, submitted_ms, snapshot, timing, ids=ids)
        records = []
        for event in events:
            event["step_count"] = int(delivery.get("step_count") or 0)
            records.append(
                Record(
                    lead_id.encode(),
                    self.codec.encode(event),
                    [(TYPE_HEADER, event["type"].encode())],
                    events_topic(flow_id, FEEDBACK_STEP_ID),
                )
            )
        return records

    def close(self) -> None:
        self.deliveries.close()
