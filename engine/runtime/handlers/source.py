"""The source step's I/O: read a raw intake record, assign the lead id, accept or reject."""

from __future__ import annotations

from confluent_kafka import Message

from engine.events import Timing
from engine.flows import Flow, SourceStep
from engine.ids import derived_lead_id, id_timestamp_ms, is_valid_id
from engine.runtime.handlers.base import BaseHandler, Record, header_map, now_ms
from engine.steps.source import Submission, accept_submission
from schemas.codec import EventCodec


class SourceHandler(BaseHandler):
    def __init__(self, flow: Flow, step: SourceStep, host: str, codec: EventCodec) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step

    def handle(self, msg: Message) -> list[Record]:
        start = now_ms()
        _, produced_ms = msg.timestamp()
        key = (msg.key() or b"").decode("ascii", errors="replace")
        if is_valid_id(key):
            lead_id, submitted_ms = key, id_timestamp_ms(key)
        else:
            submitted_ms = produced_ms if produced_ms > 0 else start
            lead_id = derived_lead_id(submitted_ms, msg.topic(), msg.partition(), msg.offset())
        headers = header_map(msg)
        sub = Submission(
            body=msg.value() or b"",
            lead_id=lead_id,
            submitted_ms=submitted_ms,
            flow_id=self.flow.id,
            flow_name=self.flow.name,
            source_id=headers.get("source-id", self.step.id.encode()).decode(errors="replace"),
            source_name=self.step.name,
            content_type=headers.get("content-type", b"application/json").decode(errors="replace"),
        )
        result = accept_submission(sub, self.step.settings)
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        return self._emit(result, lead_id, submitted_ms, {}, timing)
