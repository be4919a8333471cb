"""The source step's I/O: read a raw intake record, assign the lead id, accept or reject.

A lead the field checks accept is then put to the flow's shared state: a
duplicate of an earlier lead, or a lead over a flow or source cap, is
rejected instead (``source.rejected``), and only admitted leads count. What
to ask and what the answer means are ``engine.steps.admission``'s.
"""

from __future__ import annotations

import orjson
from confluent_kafka import Message

from engine.events import Timing
from engine.flows import Flow, SourceStep
from engine.ids import derived_lead_id, id_timestamp_ms, is_valid_id
from engine.intake.answers import lead_answer, recorded_response
from engine.intake.bodies import decode_body
from engine.intake.records import HttpIntake, read_http_intake
from engine.runtime.handlers.base import BaseHandler, Record, header_map, now_ms
from engine.settings import get_settings
from engine.state.store import DuplicateCheck, StateStore
from engine.steps.admission import admission_question, admit
from engine.steps.base import StepResult
from engine.steps.duplicates import LeadOrder
from engine.steps.source import Submission, accept_submission
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
        key = (msg.key() or b"").decode("ascii", errors="replace")
        if is_valid_id(key):
            lead_id, submitted_ms = key, id_timestamp_ms(key)
        else:
            submitted_ms = produced_ms if produced_ms > 0 else start
            lead_id = derived_lead_id(submitted_ms, msg.topic(), msg.partition(), msg.offset())
        headers = header_map(msg)
        http = read_http_intake(headers)
        sub = Submission(
            body=msg.value() or b"",
            lead_id=lead_id,
            submitted_ms=submitted_ms,
            flow_id=self.flow.id,
            flow_name=self.flow.name,
            source_id=headers.get("source-id", self.step.id.encode()).decode(errors="replace"),
            source_name=self.step.name,
            content_type=headers.get("content-type", b"application/json").decode(errors="replace"),
            http_request=http.request if http is not None else None,
            price=http.price if http is not None else None,
        )
        result = accept_submission(sub, self.step.settings)
        if self.state is not None:
            result = self._admit(sub, result, self.state)
        if http is not None:
            self._record_answer(sub, http, result)
        timing = Timing(start, now_ms(), max(0, start - produced_ms) if produced_ms > 0 else 0)
        return self._emit(result, lead_id, submitted_ms, {}, timing, msg)

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

    def _record_answer(self, sub: Submission, http: HttpIntake, result: StepResult) -> None:
        """Put on ``source.submitted`` the answer the HTTP endpoint gives, when this step
        decides it: always for a rejection, for an acceptance unless the source waits for
        ``flow.completed`` (then the answer is that event's outcome, reason and cost)."""
        submitted, verdict = result.events[0], result.events[-1]
        if http.ping_id is not None:
            for draft in result.events:
                draft.vars["ping.id"] = http.ping_id
        intake = self.step.settings.intake
        waits = intake is not None and intake.wait_for == "completion"
        if verdict.type == "source.accepted" and waits:
            return
        malformed = not result.proceed and not isinstance(
            decode_body(sub.body, sub.content_type), dict
        )
        price = verdict.cost if verdict.type == "source.accepted" else 0.0
        answer = lead_answer(sub.lead_id, verdict.outcome, verdict.reason, price, malformed)
        body = orjson.dumps(answer.body)
        submitted.response = recorded_response(answer, now_ms(), body)

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
