"""What one handled input comes to: the events to record, and what else the runtime must do.

A step decides its own events (``StepResult``); settling adds what the engine
decides around them, the same for every step kind: a ``retry.attempted`` on a
later attempt, a retry or giving up after an error (``engine.steps.retry``), and
``flow.completed`` when the lead's flow ends here (``engine.steps.completion``).
The runtime turns the ``Settlement`` into Kafka records and does nothing else
with it, so every branch is specified with plain values in
``tests/engine/steps/test_settlement.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.retries import RetrySettings
from engine.steps.base import EventDraft, Snapshot, StepResult
from engine.steps.completion import complete_flow, finishes
from engine.steps.retry import GiveUp, RetryPlan, TryAgain, retry_or_give_up, with_attempt

# The events of steps that call a service: they say how many retries came before them.
_CALLING_EVENTS = ("enhancement.", "recipient.")


def step_module(kind: str) -> str:
    """The module whose pure decision a step of ``kind`` runs (``engine.steps.filter``):
    what events name as ``module_id``, LeadConduit's integration module. Each kind's
    decision lives in the module of its name (``tests/engine/steps/test_settlement.py``
    checks every kind the flow model knows)."""
    return f"engine.steps.{kind}"


@dataclass(frozen=True, slots=True)
class StepPlace:
    """Where a step stands in its flow, as settling needs it (fixed per step and flow version)."""

    flow_id: str
    is_last: bool
    stop_at_first_delivery: bool
    # LeadConduit's "integration module": the step kind's module (``step_module``).
    module_id: str
    retry: RetrySettings | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the runtime writes for one input, in this order: ``events`` (stamped, on the
    step's events topic), then the input on the retry topic per ``retry``, or on the
    dead-letter topic with the error ``dead_letter``."""

    events: list[EventDraft]
    # The last event is the next step's input (the lead goes on to the next step).
    hand_off: bool
    retry: RetryPlan | None = None
    dead_letter: str | None = None


def settle(
    result: StepResult,
    before: Snapshot,
    place: StepPlace,
    attempt: int,
    decided_ms: int,
    retried: str | None = None,
) -> Settlement:
    """Settle a step's ``result`` for a lead whose snapshot was ``before``, on attempt
    ``attempt``, decided at ``decided_ms`` (the time a retry's delay counts from);
    ``retried``: on a later attempt, the failure it retries.

    The step's own drafts (and a ``retry.attempted``) are completed in place with the
    step's module; the engine's own events (``retry.scheduled``, ``flow.completed``) name
    none. A step that does not change the snapshot leaves ``before`` as the snapshot of
    every event, so its bytes are reused when they are encoded.
    """
    result = with_attempt(result, attempt, place.retry, retried)
    drafts = result.events
    for draft in drafts:
        if draft.module_id is None:
            draft.module_id = place.module_id
        if draft.type.startswith(_CALLING_EVENTS):
            draft.retry_attempts = attempt - 1
    last = drafts[-1]
    after_error = retry_or_give_up(last, attempt, place.retry, decided_ms)
    if isinstance(after_error, TryAgain):
        return Settlement([*drafts, after_error.scheduled], False, retry=after_error.plan)
    dead_letter = after_error.error if isinstance(after_error, GiveUp) else None
    if finishes(last, result.proceed, place.is_last, place.stop_at_first_delivery):
        completed = complete_flow(before, last, place.flow_id)
        return Settlement([*drafts, completed], False, dead_letter=dead_letter)
    return Settlement(drafts, True, dead_letter=dead_letter)
