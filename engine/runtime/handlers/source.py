"""The source step's I/O: read a raw intake record, assign the lead id, accept or reject.

A lead the field checks accept is then put to the flow's shared state: a
duplicate of an earlier lead, or a lead over a flow or source cap, is
rejected instead (``source.rejected``), and only admitted leads count. What
to ask and what the answer means are ``engine.steps.admission``'s; whose lead
a record is and what a source posting it over HTTP is answered are
``engine.steps.submission``'s.
"""

from __future__ import annotations

from confluent_kafka import Message

from engine.events import Timing
from engine.flows import Flow, SourceStep
from engine.intake.records import read_http_intake
from engine.runtime.handlers.base import BaseHandler, Record, header_map, now_ms
from engine.settings import get_settings
from engine.state.store import DuplicateCheck, StateStore
from engine.steps.admission import admission_question, admit
from engine.steps.base import StepResult
from engine.steps.duplicates import LeadOrder
from engine.steps.source import Submission, accept_submission
from engine.steps.submission import answer_source, lead_identity
from schemas.codec import EventCodec


class SourceHandler(BaseHandler):
    def __init__(
        self,
        flow: Flow,
        step: SourceStep,
        host: str,
        codec: EventCodec,
        state: StateStore | None = None,
    ) -> None:
        super().__init__(flow, step.id, host, codec)
        self.step = step
        settings = step.settings
        if state is None and (flow.caps or settings.caps or settings.duplicate_window_days):
            # The process settings' database: a step whose flow has caps or
            # duplicate checking never runs without its state.
            state = StateStore(get_settings())
        self.state = state

    def handle(self, msg: Message) -> list[Record]:
        start = now_ms()
        _, produced_ms = msg.timestamp()
        lead_id, submitted_ms = lead_identity(
            msg.key(), produced_ms, start, msg.topic(), msg.partition(), msg.offset()
        )
        headers = header_map(msg)
        http = read_http_intake(headers)
        content_type = headers.get("content-type", b"application/json").decode(errors="replace")
        body = msg.value() or b""
        if self.sealer is not None:
            if b"enc:v1:" in body:
                body = self.sealer.open_body(body)  # sealed at the intake edge; again on emit
            else:  # a producer that wrote the intake topic itself: sealed from here on
                self.sealer.index_body(lead_id, body, content_type)
        sub = Submission(
            body=body,
            lead_id=lead_id,
            submitted_ms=submitted_ms,
            flow_id=self.flow.id,
            flow_name=self.flow.name,
            source_id=headers.get("source-id", self.step.id.encode()).decode(errors="replace"),
            source_name=self.step.name,
            content_type=content_type,
            http_request=http.request if http is not None else None,
            price=http.price if http is not None else None,
            ping_id=http.ping_id if http is not None else None,
            client_ip=http.client_ip if http is not None else None,
        )
        result = accept_submission(sub, self.step.settings)
        if self.state is not None:
            result = self._admit(sub, result, self.state)
        if http is not None:
            result = answer_source(result, sub, http, self.step.settings, now_ms())
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        # The inbound body, as recorded in the source's events, is sealed whole: it may
        # quote a sensitive value however the source spelled or nested it.
        return self._emit(result, lead_id, submitted_ms, {}, timing, msg, seal_request_body=True)

    def _admit(self, sub: Submission, result: StepResult, state: StateStore) -> StepResult:
        """Ask the state what ``engine.steps.admission`` says to ask, and let it judge the
        answer. Raises ``StateUnavailableError`` when Postgres cannot answer (the lead is
        retried)."""
        lead = LeadOrder(sub.submitted_ms, sub.lead_id)
        settings = self.step.settings
        question = admission_question(
            result, lead, self.flow.id, self.flow.caps, self.step.id, settings
        )
        if question is None:
            return result
        duplicates = None
        if question.fingerprint is not None:
            duplicates = DuplicateCheck(self.flow.id, question.fingerprint, question.window_days)
        answer = state.admit(question.lead, question.checks, duplicates)
        return admit(result, question, answer.duplicate_of, answer.capped)

    def close(self) -> None:
        super().close()
        if self.state is not None:
            self.state.close()
