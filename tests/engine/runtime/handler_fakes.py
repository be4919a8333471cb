"""Stand-ins for driving a step handler without Kafka: a consumed message, a hand-off event."""

from __future__ import annotations

from typing import Any

from engine.events import StepIdentity, Timing, stamp_events
from engine.ids import id_timestamp_ms
from engine.steps.base import EventDraft, Snapshot
from engine.topics import ATTEMPT_HEADER, HANDOFF_HEADER, TYPE_HEADER
from schemas.codec import default_codec

LEAD_ID = "01KB0000000000000000000000"
SUBMITTED_MS = id_timestamp_ms(LEAD_ID)
PRODUCED_MS = SUBMITTED_MS + 40


class FakeMessage:
    """What a handler reads of a consumed ``confluent_kafka.Message``."""

    def __init__(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, Any]] | None = None,
        topic: str = "leadflow.test.events.previous",
        offset: int = 17,
        produced_ms: int = PRODUCED_MS,
    ) -> None:
        self._value, self._key, self._headers = value, key, headers
        self._topic, self._offset, self._produced_ms = topic, offset, produced_ms

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, Any]] | None:
        return self._headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._produced_ms)


def handoff(
    snapshot: Snapshot, flow_id: str = "test", attempt: int | None = None, lead_id: str = LEAD_ID
) -> FakeMessage:
    """The previous step's hand-off of a lead whose snapshot is ``snapshot`` (on its retry
    topic for a later ``attempt``)."""
    who = StepIdentity(flow_id, 1, "previous", "Previous", 0, "host", "0")
    draft = EventDraft("source.accepted", "success", entity_id="previous")
    snapshot = {"lead.id": lead_id, "submission.timestamp": SUBMITTED_MS, **snapshot}
    timing = Timing(SUBMITTED_MS, SUBMITTED_MS + 2, 0)
    (event,) = stamp_events([draft], who, lead_id, SUBMITTED_MS, snapshot, timing)
    headers: list[tuple[str, Any]] = [(TYPE_HEADER, b"source.accepted"), (HANDOFF_HEADER, b"1")]
    if attempt is not None:
        headers.append((ATTEMPT_HEADER, str(attempt).encode()))
    return FakeMessage(default_codec().encode(event), lead_id.encode(), headers)
