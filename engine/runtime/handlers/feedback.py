"""The feedback worker's I/O: find the delivery a feedback refers to, record the new events.

The delivery is looked up in the timeline projection (Postgres), which is
itself rebuilt from the events; the new events go to the flow's
``events.feedback`` topic, so the projector and the streamers see them like
any other event. Unknown or malformed feedback goes to the rejected topic
with its reason - never silently dropped.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import structlog
from confluent_kafka import Message

from engine import __version__
from engine.errors import TransientStepError
from engine.events import StepIdentity, Timing, stamp_events
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

FEEDBACK_TOPIC = "leadflow.feedback"
FEEDBACK_REJECTED_TOPIC = "leadflow.feedback.rejected"
# Feedback events sort after every step of the lead: the last step index.
_FEEDBACK_INDEX = 255


class FeedbackHandler:
    def __init__(self, settings: Settings, codec: EventCodec) -> None:
        self.settings = settings
        self.codec = codec
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _lookup(self, event_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The event, and its lead's timeline (for the lead's revenue after the feedback)."""
        from projectors.queries import get_event, lead_timeline
        from projectors.store import connect

        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.settings, application_name="leadflow-feedback")
            event = get_event(self._conn, event_id)
            if event is None:
                return None, []
            return event, lead_timeline(self._conn, str(event["lead_id"]))
        except Exception as exc:  # the projection is unreachable: decide later, not wrongly
            self._conn = None
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
                to=FEEDBACK_REJECTED_TOPIC,
            )
            headers: Headers = [(ERROR_HEADER, str(exc).encode())]
            return [Record(msg.key(), raw, headers, FEEDBACK_REJECTED_TOPIC)]
        assert delivery is not None
        snapshot = dict(delivery["vars"])
        lead_id, flow_id = str(delivery["lead_id"]), str(delivery["flow_id"])
        submitted = snapshot.get("submission.timestamp")
        submitted_ms = submitted if isinstance(submitted, int) else start
        # Deterministic ids from the feedback's Kafka position: a redelivered
        # feedback message re-creates the same events, which consumers de-duplicate.
        n = (
            int.from_bytes(
                hashlib.blake2b(
                    f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode(), digest_size=2
                ).digest(),
                "big",
            )
            % 32768
        )
        who = StepIdentity(
            flow_id,
            int(delivery.get("flow_version") or 1),
            FEEDBACK_STEP_ID,
            "Feedback",
            _FEEDBACK_INDEX,
            self.settings.instance_id,
            __version__,
        )
        _, produced_ms = msg.timestamp()
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        # 32,768 slots per lead (attempt x sequence pairs), two events in each.
        events = stamp_events(
            result.events,
            who,
            lead_id,
            submitted_ms,
            snapshot,
            timing,
            attempt=n // 128 + 1,
            first_seq=(n % 128) * 2,
        )
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
        if self._conn is not None:
            self._conn.close()
