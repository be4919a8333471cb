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


RETRYING = FLOW.replace(
    "mapping: {phone: lead.phone_1}, timeout_ms: 800}",
    "mapping: {phone: lead.phone_1}, timeout_ms: 800,"
    " retry: {attempts: 3, initial_backoff_ms: 100}, idempotency_header: X-Delivery-Key}",
)


def test_the_services_wait_is_wait_ms_on_every_event_of_the_handling() -> None:
    # A call that timed out after 5 s: the retry.scheduled it leads to waited 5 s on the
    # buyer too; the engine's own overhead is the rest, not the 5 s.
    flow = parse_flow(RETRYING, "calls.yaml")
    step = flow.step("buyer")
    assert isinstance(step, RecipientStep)
    timed_out = Answer(None, {}, b"", "Buyer timeout after 800ms", wait_ms=800)
    handler = RecipientHandler(flow, step, "host", default_codec(), ScriptedRunner(timed_out))
    records = handler.handle(handoff(SNAPSHOT, flow_id="calls"))  # type: ignore[arg-type]
    events = decoded([r for r in records if r.topic is None])
    assert [e["type"] for e in events] == ["recipient.error", "retry.scheduled"]
    assert [e["wait_ms"] for e in events] == [800, 800]
    assert all(e["overhead_ms"] == max(0, e["ms"] - 800) for e in events)


def test_a_retry_and_a_replay_post_with_the_same_key_in_the_configured_header() -> None:
    flow = parse_flow(RETRYING, "calls.yaml")
    step = flow.step("buyer")
    assert isinstance(step, RecipientStep)
    runner = ScriptedRunner(*[ok({"outcome": "success"})] * 3)
    handler = RecipientHandler(flow, step, "host", default_codec(), runner)
    handler.handle(handoff(SNAPSHOT, flow_id="calls"))  # type: ignore[arg-type]
    handler.handle(handoff(SNAPSHOT, flow_id="calls"))  # type: ignore[arg-type]  # a replay
    handler.handle(handoff(SNAPSHOT, flow_id="calls", attempt=2))  # type: ignore[arg-type]
    keys = [c.request.headers.get("X-Delivery-Key") for c in runner.calls]
    assert keys[0] is not None and keys == [keys[0]] * 3
    assert "Idempotency-Key" not in runner.calls[0].request.headers


def test_an_error_event_records_the_destinations_breaker_state(flow: Flow) -> None:
    step = flow.step("buyer")
    assert isinstance(step, RecipientStep)
    reason = "Buyer circuit open: 5 calls failed in a row"
    runner = ScriptedRunner(Answer(None, {}, b"", reason, breaker_state="open"))
    handler = RecipientHandler(flow, step, "host", default_codec(), runner)
    records = handler.handle(handoff(SNAPSHOT, flow_id="calls"))  # type: ignore[arg-type]
    error = decoded([r for r in records if r.topic is None])[0]
    assert (error["type"], error["circuit_breaker_state"]) == ("recipient.error", "open")
    assert error["version"] == "6"
