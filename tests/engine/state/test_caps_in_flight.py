"""Caps stay exact while deliveries are in flight, on the real Postgres.

A delivery reserves its slot when it starts (before the call), so a second delivery
started while the first is in flight sees the cap as the first left it; a delivery
that ends in a retry for later gives its slot back, so the cap is not held by a lead
that is not being delivered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from engine.caps import CapSpec
from engine.flows import Flow, RecipientStep, parse_flow
from engine.runtime.calls import CallRunner
from engine.runtime.handlers.base import Record, Waiting
from engine.runtime.handlers.recipient import RecipientHandler
from engine.settings import Settings
from engine.state.store import StateStore
from engine.steps.calls import Answer, Call
from engine.steps.cap_checks import CapCheck, cap_checks, recipient_scope
from engine.steps.recipient import submitted_at
from schemas.codec import default_codec
from tests.engine.runtime.handler_fakes import SUBMITTED_MS, handoff

pytestmark = pytest.mark.stack

FLOW = """
id: inflight
name: In flight
steps:
  - {id: source, kind: source, name: Source, settings: {fields: [{name: email}]}}
  - id: buyer
    kind: recipient
    name: Buyer
    settings:
      url: http://buyer.test/leads
      caps: [{maximum: 1}]
      retry: {attempts: 3, initial_backoff_ms: 60000}
"""
FIRST, SECOND = "01KB0000000000000000000001", "01KB0000000000000000000002"


class NoCalls:
    """The handlers here are started, never ``handle``d: their calls are answered by hand."""

    def run(self, call: Call) -> Answer:
        raise AssertionError("no call is made through run()")

    def close(self) -> None:
        pass


@pytest.fixture
def flow() -> Flow:
    return parse_flow(FLOW, "inflight.yaml")


@pytest.fixture
def buyer(flow: Flow, state_settings: Settings) -> Iterator[RecipientHandler]:
    step = flow.step("buyer")
    assert isinstance(step, RecipientStep)
    runner: CallRunner = NoCalls()
    handler = RecipientHandler(
        flow, step, "host", default_codec(), runner, StateStore(state_settings)
    )
    yield handler
    handler.close()


def held(settings: Settings, flow: Flow) -> int:
    step = flow.step("buyer")
    assert isinstance(step, RecipientStep)
    snapshot = {"submission.timestamp": SUBMITTED_MS}
    (check,) = cap_checks(
        recipient_scope(flow.id, "buyer"), step.settings.caps, submitted_at(FIRST, snapshot)
    )
    store = StateStore(settings)
    try:
        return store.count(check)
    finally:
        store.close()


def types(records: list[Record]) -> list[str]:
    return [default_codec().decode(r.value)["type"] for r in records if r.topic is None]


def test_a_delivery_in_flight_holds_the_last_slot_and_a_retry_for_later_gives_it_back(
    buyer: RecipientHandler, flow: Flow, state_settings: Settings
) -> None:
    first = buyer.start(handoff({}, flow_id=flow.id, lead_id=FIRST))  # type: ignore[arg-type]
    assert isinstance(first, Waiting)  # its call is in flight, its slot taken
    second = buyer.start(handoff({}, flow_id=flow.id, lead_id=SECOND))  # type: ignore[arg-type]
    assert not isinstance(second, Waiting)
    (capped,) = [default_codec().decode(r.value) for r in second if r.topic is None][:1]
    assert (capped["type"], capped["cap_reached"]) == ("recipient.failed", True)
    assert held(state_settings, flow) == 1

    unavailable = Answer(503, {}, b"{}", wait_ms=40)
    records = first.resume([unavailable])
    assert isinstance(records, list)
    assert types(records) == ["recipient.error", "retry.scheduled"]
    assert held(state_settings, flow) == 0  # the retry, due in a minute, holds no slot


def race(settings: Settings, leads: list[str], checks: list[CapCheck]) -> dict[str, bool]:
    """Each lead reserves from its own worker (thread and connection), all at once."""
    barrier = threading.Barrier(len(leads))
    won: dict[str, bool] = {}

    def deliver(lead: str) -> None:
        store = StateStore(settings)
        try:
            barrier.wait()
            won[lead] = store.reserve(lead, checks) is None
        finally:
            store.close()

    racers = [threading.Thread(target=deliver, args=(lead,)) for lead in leads]
    for t in racers:
        t.start()
    for t in racers:
        t.join(30)
    return won


def test_two_deliveries_started_at_once_cannot_both_take_the_last_slot(
    flow: Flow, state_settings: Settings
) -> None:
    for round_ in range(8):
        # A fresh cap (named per round) with all but one slot taken, then a race for it.
        spec = CapSpec(maximum=3, name=f"round{round_}")
        checks = cap_checks(recipient_scope(flow.id, "buyer"), [spec], SUBMITTED_MS)
        setup = StateStore(state_settings)
        try:
            for lead in (f"{round_}-a", f"{round_}-b"):
                assert setup.reserve(lead, checks) is None
        finally:
            setup.close()
        won = race(state_settings, [f"{round_}-c", f"{round_}-d"], checks)
        assert sorted(won.values()) == [False, True], won
