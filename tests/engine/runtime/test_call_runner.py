"""The external-call seam: a calling step's handler hands the call its step planned to its
runner and the runner's answer to the step's judgement; it makes no call of its own.

No Kafka and no HTTP: the runner is a stand-in that answers from a script.
"""

from __future__ import annotations

import orjson
import pytest

from engine.flows import EnhancementStep, Flow, RecipientStep, parse_flow
from engine.runtime.handlers.enhancement import EnhancementHandler
from engine.runtime.handlers.recipient import RecipientHandler
from engine.steps.calls import Answer, Call
from engine.steps.enhancement import plan_enhancement
from engine.steps.recipient import plan_delivery
from schemas.codec import default_codec
from tests.engine.runtime.handler_fakes import LEAD_ID, SUBMITTED_MS, handoff

FLOW = """
id: calls
name: Calls
steps:
  - {id: source, kind: source, name: Source, settings: {fields: [{name: phone_1}]}}
  - id: phone
    kind: enhancement
    name: Phone check
    settings: {url: http://service.test/phone, key: phone_check, mapping: {phone: lead.phone_1}}
  - id: buyer
    kind: recipient
    name: Buyer
    settings: {url: http://buyer.test/leads, mapping: {phone: lead.phone_1}, timeout_ms: 800}
"""
SNAPSHOT = {"lead.id": LEAD_ID, "submission.timestamp": SUBMITTED_MS, "lead.phone_1": "5125550123"}


class ScriptedRunner:
    """Answers each call with the next scripted answer, remembering what it was asked."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.calls: list[Call] = []
        self.closed = False

    def run(self, call: Call) -> Answer:
        self.calls.append(call)
        return self.answers.pop(0)

    def close(self) -> None:
        self.closed = True


def ok(body: object) -> Answer:
    return Answer(200, {}, orjson.dumps(body), wait_ms=30, sent_at_ms=1, received_at_ms=31)


@pytest.fixture
def flow() -> Flow:
    return parse_flow(FLOW, "calls.yaml")


def decoded(records: list[object]) -> list[dict[str, object]]:
    return [default_codec().decode(r.value) for r in records]  # type: ignore[attr-defined]


def test_the_buyer_step_asks_its_runner_for_the_call_its_step_planned(flow: Flow) -> None:
    step = flow.step("buyer")
    assert isinstance(step, RecipientStep)
    runner = ScriptedRunner(ok({"outcome": "success", "price": 7.5}))
    handler = RecipientHandler(flow, step, "host", default_codec(), runner)
    records = handler.handle(handoff(SNAPSHOT, flow_id="calls"))  # type: ignore[arg-type]
    planned = plan_delivery(LEAD_ID, SNAPSHOT, step.settings, "buyer", 2)
    assert runner.calls == [planned]
    assert isinstance(planned, Call) and (planned.timeout_ms, planned.service) == (800, "Buyer")
    delivered, completed = decoded(records)
    assert (delivered["type"], delivered["revenue"], delivered["wait_ms"]) == (
        "recipient.delivered",
        7.5,
        30,
    )
    assert completed["type"] == "flow.completed"
    handler.close()
    assert runner.closed


def test_the_enhancement_step_judges_what_its_runner_answered(flow: Flow) -> None:
    step = flow.step("phone")
    assert isinstance(step, EnhancementStep)
    failed = Answer(None, {}, b"", "Service timeout after 5000ms", wait_ms=5000)
    runner = ScriptedRunner(failed)
    handler = EnhancementHandler(flow, step, "host", default_codec(), runner)
    records = handler.handle(handoff(SNAPSHOT, flow_id="calls"))  # type: ignore[arg-type]
    assert runner.calls == [plan_enhancement(LEAD_ID, SNAPSHOT, step.settings, 1)]
    (error,) = decoded(records)
    assert (error["type"], error["reason"]) == ("enhancement.error", "Service timeout after 5000ms")
