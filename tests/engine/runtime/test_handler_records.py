"""What a step handler writes for what its step decided: the events (the hand-off marked),
the input on the retry topic with its attempt and due time, or on the dead-letter topic.

No Kafka: the handler is driven with stand-in messages and a fixed clock; the decisions
themselves are specified in ``tests/engine/steps/test_settlement.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import ClassVar

import orjson
import pytest

from engine.flows import EnhancementStep, FilterStep, Flow, RecipientStep, SourceStep, parse_flow
from engine.runtime.calls import AsyncCallRunner
from engine.runtime.handlers import PoisonMessageError, Record
from engine.runtime.handlers.enhancement import EnhancementHandler
from engine.runtime.handlers.feedback import FeedbackHandler
from engine.runtime.handlers.filter import FilterHandler
from engine.runtime.handlers.recipient import RecipientHandler
from engine.runtime.handlers.source import SourceHandler
from engine.runtime.kafka.dead_letter import dead_letter_headers
from engine.runtime.schema_registry import TopicCodecs
from engine.settings import Settings
from engine.state.store import Admission, DuplicateCheck
from engine.steps.calls import Answer, Call
from engine.steps.cap_checks import CapCheck, CapCount
from engine.steps.duplicates import LeadOrder, fingerprint
from engine.steps.feedback import feedback_events, parse_feedback
from engine.topics import (
    ATTEMPT_HEADER,
    DUE_HEADER,
    ENCODING_HEADER,
    HANDOFF_HEADER,
    RETRY_CAUSE_HEADER,
    TYPE_HEADER,
)
from schemas.codec import default_codec
from tests.engine.runtime.handler_fakes import LEAD_ID, SUBMITTED_MS, FakeMessage, handoff
from tests.factories import make_lead_events

# Every event says how it is framed (single-object here: no registry in unit tests).
SINGLE = (ENCODING_HEADER, b"single-object")
NOW_MS = SUBMITTED_MS + 500
FLOW = """
id: test
name: Test
steps:
  - id: previous
    kind: source
    name: Source
    settings:
      fields: [{name: state}, {name: email, type: email}]
      duplicate_window_days: 30
      caps: [{maximum: 10}]
  - id: phone
    kind: enhancement
    name: Phone check
    settings:
      url: http://service.test/phone
      key: phone_check
      retry: {attempts: 3, initial_backoff_ms: 100}
  - id: area
    kind: filter
    name: Area
    settings: {rules: [{name: Area, field: lead.state, op: in, value: [TX]}]}
  - id: buyer
    kind: recipient
    name: Buyer
    settings:
      url: http://buyer.test/leads
      caps: [{maximum: 3}]
  - {id: last, kind: filter, name: Last, settings: {rules: [{field: lead.state, op: exists}]}}
"""


class Scripted(AsyncCallRunner):
    """The real runner, with every exchange answering (or raising) as the test says."""

    made: ClassVar[list[Scripted]] = []

    def __init__(self, answer: Answer | Exception) -> None:
        super().__init__()
        self.answer = answer
        Scripted.made.append(self)

    async def _exchange(self, call: Call) -> Answer:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture(autouse=True)
def close_runners() -> Iterator[None]:
    """Each test's runners closed after it (a handler's test does not close its handler)."""
    yield
    while Scripted.made:
        Scripted.made.pop().close()


def json_answer(body: object) -> Answer:
    return Answer(200, {"content-type": "application/json"}, orjson.dumps(body))


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: NOW_MS * 1_000_000)


@pytest.fixture
def flow() -> Flow:
    return parse_flow(FLOW, "test.yaml")


def filter_handler(flow: Flow) -> FilterHandler:
    step = flow.step("area")
    assert isinstance(step, FilterStep)
    return FilterHandler(flow, step, "host", default_codec())


def unavailable_service(flow: Flow) -> EnhancementHandler:
    step = flow.step("phone")
    assert isinstance(step, EnhancementStep)
    calls = Scripted(Answer(503, {}, b""))
    return EnhancementHandler(flow, step, "host", default_codec(), calls)


def types(records: list[Record]) -> list[str]:
    return [default_codec().decode(r.value)["type"] for r in records if r.topic is None]


def test_a_lead_that_goes_on_is_marked_as_the_next_steps_input(flow: Flow) -> None:
    (record,) = filter_handler(flow).handle(handoff({"lead.state": "TX"}))
    assert (record.key, record.topic) == (LEAD_ID.encode(), None)
    assert record.headers == [(TYPE_HEADER, b"filter.passed"), SINGLE, (HANDOFF_HEADER, b"1")]


def test_a_stopped_lead_hands_nothing_on(flow: Flow) -> None:
    records = filter_handler(flow).handle(handoff({"lead.state": "WY"}))
    assert types(records) == ["filter.failed", "flow.completed"]
    assert [r.headers for r in records] == [
        [(TYPE_HEADER, b"filter.failed"), SINGLE],
        [(TYPE_HEADER, b"flow.completed"), SINGLE],
    ]


def test_records_that_are_not_a_hand_off_are_not_the_steps_input(flow: Flow) -> None:
    message = handoff({"lead.state": "TX"})
    message._headers = [(TYPE_HEADER, b"source.submitted")]
    assert filter_handler(flow).handle(message) == []


@pytest.mark.parametrize(
    "message",
    [
        FakeMessage(b"not avro", headers=[(HANDOFF_HEADER, b"1")]),
        FakeMessage(None, headers=[(HANDOFF_HEADER, b"1")]),
    ],
)
def test_an_unreadable_hand_off_is_poison(flow: Flow, message: FakeMessage) -> None:
    with pytest.raises(PoisonMessageError):
        filter_handler(flow).handle(message)  # type: ignore[arg-type]


def test_an_unreadable_attempt_is_poison(flow: Flow) -> None:
    message = handoff({"lead.state": "TX"})
    message._headers = [(HANDOFF_HEADER, b"1"), (ATTEMPT_HEADER, b"second")]
    with pytest.raises(PoisonMessageError):
        filter_handler(flow).handle(message)  # type: ignore[arg-type]


def test_an_error_with_attempts_left_parks_the_input_on_the_retry_topic(flow: Flow) -> None:
    message = handoff({"lead.phone_1": "5125550123"})
    records = unavailable_service(flow).handle(message)  # type: ignore[arg-type]
    assert types(records) == ["enhancement.error", "retry.scheduled"]
    assert all((HANDOFF_HEADER, b"1") not in r.headers for r in records if r.topic is None)
    parked = records[-1]
    assert (parked.topic, parked.key, parked.value) == (
        "leadflow.test.retry.phone",
        LEAD_ID.encode(),
        message.value(),
    )
    assert parked.headers == [
        (HANDOFF_HEADER, b"1"),
        (ATTEMPT_HEADER, b"2"),
        (DUE_HEADER, str(NOW_MS + 100).encode()),
        (RETRY_CAUSE_HEADER, b"Service answered HTTP 503"),
    ]


def test_the_last_attempts_error_goes_on_and_the_input_is_dead_lettered(flow: Flow) -> None:
    message = handoff({"lead.phone_1": "5125550123"}, attempt=3)
    message._headers.append((RETRY_CAUSE_HEADER, b"Service timed out after 500ms"))
    records = unavailable_service(flow).handle(message)  # type: ignore[arg-type]
    assert types(records) == ["retry.attempted", "enhancement.error"]
    attempted = default_codec().decode(records[0].value)
    assert attempted["original_failure"] == "Service timed out after 500ms"
    assert (HANDOFF_HEADER, b"1") in records[1].headers
    kept = records[-1]
    assert (kept.topic, kept.key, kept.value) == (
        "leadflow.test.dlq",
        LEAD_ID.encode(),
        message.value(),
    )
    error = "Retries exhausted after 3 attempts: Service answered HTTP 503"
    assert kept.headers == dead_letter_headers(error, message.topic(), 2, 17)


class AdmittingState:
    """The state store's admission, answering ``answer`` and remembering what it was asked."""

    def __init__(self, answer: Admission) -> None:
        self.answer = answer
        self.asked: list[tuple[object, ...]] = []

    def admit(self, *question: object) -> Admission:
        self.asked.append(question)
        return self.answer

    def close(self) -> None:
        pass


def test_the_source_asks_the_state_and_records_the_steps_reading_of_the_answer(
    flow: Flow,
) -> None:
    step = flow.step("previous")
    assert isinstance(step, SourceStep)
    earlier = LeadOrder(1_700_000_000_000, "01JZ0000000000000000000000")
    state = AdmittingState(Admission(duplicate_of=earlier))
    handler = SourceHandler(flow, step, "host", default_codec(), state)  # type: ignore[arg-type]
    body = b'{"state": "TX", "email": "ada@example.com"}'
    records = handler.handle(FakeMessage(body, LEAD_ID.encode()))  # type: ignore[arg-type]
    assert types(records) == ["source.submitted", "source.rejected", "flow.completed"]
    rejected = default_codec().decode(records[1].value)
    assert rejected["reason"] == "Duplicate: previously submitted 2023-11-14"
    ((lead, checks, duplicates),) = state.asked
    assert lead == LeadOrder(SUBMITTED_MS, LEAD_ID)
    assert [c.key for c in checks] == ["source:test/previous:day@UTC"]  # type: ignore[attr-defined]
    fp = fingerprint("test", {"lead.email": "ada@example.com"}, ["email", "phone_1"])
    assert duplicates == DuplicateCheck("test", fp or b"", 30)


class OneDelivery:
    """The timeline projection, as the feedback worker reads it, holding one lead."""

    def __init__(self) -> None:
        self.timeline = make_lead_events(flow_id="test", lead_id=LEAD_ID, submitted_ms=SUBMITTED_MS)

    def find(self, event_id: str) -> tuple[dict[str, object] | None, list[dict[str, object]]]:
        return self.timeline[3], self.timeline

    def close(self) -> None:
        pass


def test_feedback_is_written_as_its_step_says_on_the_flows_feedback_topic() -> None:
    deliveries = OneDelivery()
    body = b'{"event_id": "%s", "type": "return"}' % deliveries.timeline[3]["id"].encode()
    message = FakeMessage(body, LEAD_ID.encode(), topic="leadflow.feedback", offset=44)
    handler = FeedbackHandler(Settings(instance_id="worker-1"), TopicCodecs(Settings()), deliveries)
    records = handler.handle(message)  # type: ignore[arg-type]
    expected = feedback_events(
        parse_feedback(body), deliveries.timeline[3], deliveries.timeline, message.timestamp()[1],
        44, NOW_MS,
    )  # fmt: skip
    events = [default_codec().decode(r.value) for r in records]
    assert [e["id"] for e in events] == expected.ids
    assert [e["step_count"] for e in events] == [3, 3]  # the delivery's, not a step's
    assert events[1]["vars"]["totals.revenue"] == 0.0  # returned
    topic = "leadflow.test.events.feedback"
    assert {(r.topic, r.key) for r in records} == {(topic, LEAD_ID.encode())}
    assert [r.headers for r in records] == [
        [(TYPE_HEADER, b"feedback.received"), SINGLE],
        [(TYPE_HEADER, b"feedback.processed"), SINGLE],
    ]


class Slots:
    """The state store's recipient caps: full or not, and what the handler did with slots."""

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.done: list[tuple[str, str, list[str]]] = []

    def reserve(self, lead_id: str, checks: list[CapCheck]) -> CapCount | None:
        self.done.append(("reserve", lead_id, [c.key for c in checks]))
        return CapCount(checks[0], 3, holds_lead=False) if self.full else None

    def confirm(self, lead_id: str, checks: list[CapCheck]) -> None:
        self.done.append(("confirm", lead_id, [c.key for c in checks]))

    def release(self, lead_id: str, checks: list[CapCheck]) -> None:
        self.done.append(("release", lead_id, [c.key for c in checks]))

    def close(self) -> None:
        pass


def buyer(flow: Flow, slots: Slots, answer: Answer | Exception) -> RecipientHandler:
    step = flow.step("buyer")
    assert isinstance(step, RecipientStep)
    calls = Scripted(answer)
    return RecipientHandler(flow, step, "host", default_codec(), calls, slots)  # type: ignore[arg-type]


CAP = "recipient:test/buyer:day@UTC"


def test_a_delivery_within_caps_confirms_the_slot_it_reserved(flow: Flow) -> None:
    slots = Slots()
    taken = json_answer({"outcome": "success", "price": 4})
    records = buyer(flow, slots, taken).handle(handoff({}))  # type: ignore[arg-type]
    assert types(records) == ["recipient.delivered"]
    assert slots.done == [("reserve", LEAD_ID, [CAP]), ("confirm", LEAD_ID, [CAP])]


def test_a_refused_delivery_releases_the_slot(flow: Flow) -> None:
    slots = Slots()
    refused = json_answer({"outcome": "failure", "reason": "Out of area"})
    buyer(flow, slots, refused).handle(handoff({}))  # type: ignore[arg-type]
    assert slots.done == [("reserve", LEAD_ID, [CAP]), ("release", LEAD_ID, [CAP])]


def test_at_a_full_cap_the_buyer_is_not_called(flow: Flow) -> None:
    slots = Slots(full=True)
    handler = buyer(flow, slots, AssertionError("the buyer must not be called"))
    records = handler.handle(handoff({}))  # type: ignore[arg-type]
    assert types(records) == ["recipient.failed"]
    assert default_codec().decode(records[0].value)["cap_reached"] is True
    assert slots.done == [("reserve", LEAD_ID, [CAP])]


def test_a_bug_mid_call_is_an_error_answer_and_gives_the_slot_back(flow: Flow) -> None:
    slots = Slots()
    handler = buyer(flow, slots, ZeroDivisionError("a bug"))
    records = handler.handle(handoff({}))  # type: ignore[arg-type]
    assert types(records) == ["recipient.error"]
    error = default_codec().decode(records[0].value)
    assert error["reason"] == "Buyer call failed: ZeroDivisionError"
    assert slots.done == [("reserve", LEAD_ID, [CAP]), ("release", LEAD_ID, [CAP])]


def test_a_bug_in_judging_gives_the_slot_back_and_is_raised(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("engine.runtime.handlers.recipient.judge_delivery", broken)
    slots = Slots()
    handler = buyer(flow, slots, json_answer({"outcome": "success"}))
    with pytest.raises(ZeroDivisionError):
        handler.handle(handoff({}))  # type: ignore[arg-type]
    assert slots.done == [("reserve", LEAD_ID, [CAP]), ("release", LEAD_ID, [CAP])]


def test_a_bug_in_planning_gives_the_slot_back_and_is_raised(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("engine.runtime.handlers.recipient.plan_delivery", broken)
    slots = Slots()
    handler = buyer(flow, slots, AssertionError("the buyer must not be called"))
    with pytest.raises(ZeroDivisionError):
        handler.handle(handoff({}))  # type: ignore[arg-type]
    assert slots.done == [("reserve", LEAD_ID, [CAP]), ("release", LEAD_ID, [CAP])]
