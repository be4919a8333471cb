"""Settling a step's result: what the engine records around a step's own events (a later
attempt, a retry, giving up, the lead's completion) and whether the lead is handed on."""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable

import pytest

from engine.events import StepIdentity, Timing, stamp_events
from engine.flows import Step
from engine.retries import RetrySettings
from engine.steps.base import TOTAL_COST, TOTAL_DELIVERED, TOTAL_REVENUE, EventDraft, StepResult
from engine.steps.retry import RetryPlan
from engine.steps.settlement import Settlement, StepPlace, settle, step_module

RETRY = RetrySettings(attempts=3, initial_backoff_ms=100)
MIDDLE = StepPlace("demo", is_last=False, stop_at_first_delivery=False, module_id="leadflow.filter")
LAST = StepPlace("demo", is_last=True, stop_at_first_delivery=False, module_id="leadflow.filter")
BUYER = StepPlace(
    "demo", is_last=False, stop_at_first_delivery=False, module_id="leadflow.recipient.json",
    retry=RETRY,
)  # fmt: skip
BEFORE = {TOTAL_COST: 2.5, TOTAL_REVENUE: 0.0, TOTAL_DELIVERED: 0, "lead.state": "TX"}
DECIDED = 1_764_000_000_000


def passed() -> StepResult:
    return StepResult([EventDraft("filter.passed", "success", entity_id="area")], proceed=True)


def failed() -> StepResult:
    draft = EventDraft("filter.failed", "failure", "Area: lead.state is 'WY'", entity_id="area")
    return StepResult([draft], proceed=False)


def delivered() -> StepResult:
    totals = {TOTAL_REVENUE: 12.5, TOTAL_DELIVERED: 1}
    draft = EventDraft("recipient.delivered", "success", vars=totals, entity_id="premier")
    return StepResult([draft], proceed=True)


def refused() -> StepResult:
    draft = EventDraft("recipient.failed", "failure", "Rejected by buyer", entity_id="premier")
    return StepResult([draft], proceed=True)


def error(proceed: bool = True) -> StepResult:
    reason = "Buyer timeout after 5000ms"
    draft = EventDraft("recipient.error", "error", reason, entity_id="premier")
    return StepResult([draft], proceed=proceed)


def types(settled: Settlement) -> list[str]:
    return [e.type for e in settled.events]


# --- hand-off and completion ----------------------------------------------------------


def test_a_lead_that_goes_on_is_handed_to_the_next_step() -> None:
    settled = settle(passed(), BEFORE, MIDDLE, 1, DECIDED)
    assert types(settled) == ["filter.passed"]
    assert settled == Settlement(settled.events, hand_off=True)


def test_a_stopped_lead_completes_its_flow_and_is_handed_to_no_one() -> None:
    settled = settle(failed(), BEFORE, MIDDLE, 1, DECIDED)
    assert types(settled) == ["filter.failed", "flow.completed"]
    completed = settled.events[-1]
    assert (completed.outcome, completed.reason, completed.entity_id, completed.cost) == (
        "failure",
        "Area: lead.state is 'WY'",
        "demo",
        2.5,
    )
    assert not settled.hand_off and settled.retry is None and settled.dead_letter is None


def test_the_last_step_completes_every_lead_it_lets_through() -> None:
    settled = settle(passed(), BEFORE, LAST, 1, DECIDED)
    assert types(settled) == ["filter.passed", "flow.completed"]
    assert settled.events[-1].outcome == "success"
    assert not settled.hand_off


def test_a_multi_buyer_flow_offers_a_sold_lead_to_the_next_buyer() -> None:
    settled = settle(delivered(), BEFORE, BUYER, 1, DECIDED)
    assert types(settled) == ["recipient.delivered"]
    assert settled.hand_off


@pytest.mark.parametrize("result", [refused, error])
def test_stop_at_first_delivery_stops_only_a_sold_lead(result: Callable[[], StepResult]) -> None:
    first = StepPlace("demo", False, True, "leadflow.recipient.json")
    assert types(settle(delivered(), BEFORE, first, 1, DECIDED)) == [
        "recipient.delivered",
        "flow.completed",
    ]
    kept_on = settle(result(), BEFORE, first, 1, DECIDED)
    assert kept_on.hand_off and kept_on.events[-1].type != "flow.completed"


def test_a_sold_leads_completion_carries_its_revenue() -> None:
    settled = settle(delivered(), BEFORE, LAST, 1, DECIDED)
    completed = settled.events[-1]
    assert (completed.outcome, completed.revenue, completed.cost) == ("success", 12.5, 2.5)


# --- modules --------------------------------------------------------------------------


def test_the_steps_own_events_name_its_module_and_the_engines_name_none() -> None:
    settled = settle(failed(), BEFORE, MIDDLE, 1, DECIDED)
    assert [e.module_id for e in settled.events] == ["leadflow.filter", None]


def test_a_module_the_step_chose_is_kept() -> None:
    result = passed()
    result.events[0].module_id = "leadflow.custom"
    assert settle(result, BEFORE, MIDDLE, 1, DECIDED).events[0].module_id == "leadflow.custom"


# --- retries --------------------------------------------------------------------------


def test_an_error_with_attempts_left_is_recorded_and_retried_not_handed_on() -> None:
    settled = settle(error(), BEFORE, BUYER, 1, DECIDED)
    assert types(settled) == ["recipient.error", "retry.scheduled"]
    assert settled.retry == RetryPlan(2, DECIDED + 100, error().last.reason)
    assert not settled.hand_off and settled.dead_letter is None
    # The engine's own event names no module; the step's error does.
    assert [e.module_id for e in settled.events] == ["leadflow.recipient.json", None]


def test_a_retry_of_a_required_step_does_not_complete_the_lead_yet() -> None:
    settled = settle(error(proceed=False), BEFORE, BUYER, 1, DECIDED)
    assert types(settled) == ["recipient.error", "retry.scheduled"]


def test_a_later_attempt_that_errs_again_says_so_and_retries_again() -> None:
    settled = settle(error(), BEFORE, BUYER, 2, DECIDED, retried="Buyer timed out")
    assert types(settled) == ["retry.attempted", "recipient.error", "retry.scheduled"]
    assert settled.retry == RetryPlan(3, DECIDED + 200, error().last.reason)
    # The attempt names the failure it retries; the next retry, this attempt's own.
    assert settled.events[0].original_failure == "Buyer timed out"
    assert settled.events[-1].original_failure == error().last.reason
    assert settled.events[0].module_id == "leadflow.recipient.json"


def test_a_later_attempt_that_succeeds_goes_on_as_any_lead() -> None:
    settled = settle(delivered(), BEFORE, BUYER, 2, DECIDED)
    assert types(settled) == ["retry.attempted", "recipient.delivered"]
    assert settled.hand_off and settled.retry is None and settled.dead_letter is None


def test_the_last_attempts_error_goes_on_and_its_input_is_dead_lettered() -> None:
    settled = settle(error(), BEFORE, BUYER, 3, DECIDED)
    assert types(settled) == ["retry.attempted", "recipient.error"]
    assert settled.events[0].retry_status == "completed"
    assert settled.hand_off and settled.retry is None
    assert settled.dead_letter == "Retries exhausted after 3 attempts: Buyer timeout after 5000ms"


def test_a_given_up_error_that_stops_the_lead_completes_it_with_the_error() -> None:
    settled = settle(error(proceed=False), BEFORE, BUYER, 3, DECIDED)
    assert types(settled) == ["retry.attempted", "recipient.error", "flow.completed"]
    assert (settled.events[-1].outcome, settled.events[-1].reason) == (
        "error",
        "Buyer timeout after 5000ms",
    )
    assert not settled.hand_off and settled.dead_letter is not None


def test_an_error_without_a_policy_goes_on_at_once() -> None:
    place = StepPlace("demo", False, False, "leadflow.recipient.json")
    settled = settle(error(), BEFORE, place, 1, DECIDED)
    assert types(settled) == ["recipient.error"]
    assert settled.hand_off and settled.retry is None and settled.dead_letter is None


# --- the snapshot's bytes -------------------------------------------------------------


def test_a_step_that_changes_nothing_hands_on_the_snapshot_it_read() -> None:
    """The codec splices an unchanged snapshot's bytes instead of encoding it again (the
    filter step's hot path), which needs the very snapshot object on every event."""
    settled = settle(failed(), BEFORE, MIDDLE, 1, DECIDED)
    who = StepIdentity("demo", 1, "area", "Area", 1, "host", "0")
    timing = Timing(DECIDED, DECIDED + 1, 0)
    lead_id = "01KB0000000000000000000000"
    events = stamp_events(settled.events, who, lead_id, DECIDED, BEFORE, timing)
    assert all(e["vars"] is BEFORE for e in events)


def test_module_id_is_the_module_of_the_step_kinds_decision() -> None:
    union = typing.get_args(typing.get_args(Step)[0])
    kinds = [typing.get_args(m.model_fields["kind"].annotation)[0] for m in union]
    assert sorted(kinds) == ["auction", "enhancement", "filter", "recipient", "source"]
    for kind in kinds:
        module = importlib.import_module(step_module(kind))  # a real module, not a label
        assert module.__name__ == f"engine.steps.{kind}"


def test_calling_steps_events_count_the_retries_before_them() -> None:
    error = EventDraft(
        "recipient.error", "error", "Buyer timeout after 5000ms", entity_id="premier"
    )
    settled = settle(StepResult([error], proceed=True), BEFORE, BUYER_RETRYING, 3, DECIDED)
    by_type = {e.type: e.retry_attempts for e in settled.events}
    assert by_type["recipient.error"] == 2
    assert by_type["retry.attempted"] is None  # the engine's own events count nothing
    first = settle(refused(), BEFORE, BUYER_RETRYING, 1, DECIDED)
    assert first.events[0].retry_attempts == 0
    assert settle(passed(), BEFORE, MIDDLE, 1, DECIDED).events[0].retry_attempts is None


BUYER_RETRYING = StepPlace(
    "demo",
    is_last=False,
    stop_at_first_delivery=False,
    module_id="engine.steps.recipient",
    retry=RetrySettings(attempts=5, initial_backoff_ms=100),
)
