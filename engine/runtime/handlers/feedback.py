"""The feedback worker's I/O: find the delivery a feedback refers to, record the new events.

The delivery is looked up in the timeline projection (Postgres), which is
itself rebuilt from the events: through the ``Deliveries`` the process hands
in (``projectors.deliveries``), as the projection sits above the runtime. The
new events go to the flow's
``events.feedback`` topic, so the projector and the streamers see them like
any other event. What the events are, their ids and the snapshot they continue
from are ``engine.steps.feedback``'s. Unknown or malformed feedback goes to the rejected topic
with its reason - never silently dropped.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog
from confluent_kafka import Message

from engine import __version__
from engine.errors import TransientStepError
from engine.events import RETENTION_MS, FlowContext, StepIdentity, Timing, stamp_events
from engine.ids import FEEDBACK_STEP_INDEX
from engine.runtime.handlers.base import Headers, Record, now_ms
from engine.runtime.schema_registry import SchemaRegistryUnavailableError, TopicCodecs
from engine.settings import Settings
from engine.steps.feedback import (
    FEEDBACK_STEP_ID,
    FeedbackRejectedError,
    feedback_events,
    parse_feedback,
)
from engine.topics import ENCODING_HEADER, ERROR_HEADER, TYPE_HEADER, events_topic

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


def _context_of(delivery: Event | None) -> FlowContext | None:
    """The flow context of the delivery the feedback is about (this worker serves every
    flow and holds none): where the flow streams, its ping limits. None for a delivery
    recorded before schema v5."""
    if delivery is None:
        return None
    return FlowContext(
        delivery.get("firehose"),
        delivery.get("flow_ping_limits"),
        delivery.get("source_ping_limits"),
    )


class FeedbackHandler:
    def __init__(self, settings: Settings, codecs: TopicCodecs, deliveries: Deliveries) -> None:
        self.settings = settings
        self.codecs = codecs
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
        _, published_ms = msg.timestamp()
        try:
            feedback = parse_feedback(raw)
            delivery, timeline = self._lookup(feedback.event_id)
            # Ids from the feedback message itself (its time and offset in the log never
            # change): a redelivered feedback re-creates the same events.
            added = feedback_events(
                feedback, delivery, timeline, published_ms, msg.offset() or 0, start
            )
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
        who = StepIdentity(
            added.flow_id,
            added.flow_version,
            FEEDBACK_STEP_ID,
            "Feedback",
            FEEDBACK_STEP_INDEX,
            self.settings.instance_id,
            __version__,
            added.retention_ms or RETENTION_MS,
            _context_of(delivery),
        )
        lag_ms = max(0, start - published_ms) if published_ms > 0 else 0
        timing = Timing(start, now_ms(), lag_ms)
        events = stamp_events(
            added.drafts,
            who,
            added.lead_id,
            added.submitted_ms,
            added.snapshot,
            timing,
            ids=added.ids,
            step_count=added.step_count,
        )
        topic = events_topic(added.flow_id, FEEDBACK_STEP_ID)
        try:
            codec = self.codecs.for_topic(topic)
        except SchemaRegistryUnavailableError as exc:
            raise TransientStepError(f"schema registry unavailable: {exc}") from exc
        key = added.lead_id.encode()
        encoding = (ENCODING_HEADER, codec.encoding.encode())
        return [
            Record(key, codec.encode(e), [(TYPE_HEADER, e["type"].encode()), encoding], topic)
            for e in events
        ]

    def close(self) -> None:
        self.deliveries.close()
