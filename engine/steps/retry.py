"""Retries of a step that calls a service: try the lead again later, or give up and go on.

A technical error (outcome ``error``: a timeout, a 5xx, an unreadable answer)
on an attempt before the last is not the lead's outcome yet: the step records
it with a ``retry.scheduled`` and the input waits on the step's retry topic
until it is due. The last attempt's error is final: the lead goes on with it
and the input is kept on the dead-letter topic for an operator. Every attempt
after the first begins with a ``retry.attempted``.

The due time comes from the moment the step decided, which the runtime passes
in, so the decision itself reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.retries import RetrySettings
from engine.steps.base import EventDraft, StepResult


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """Handle the same input again as attempt ``attempt`` once ``due_ms`` has passed;
    ``cause``: the error retried, which the next attempt's ``retry.attempted`` names."""

    attempt: int
    due_ms: int
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class TryAgain:
    """The error is not final: record it and ``scheduled``, and park the input per ``plan``."""

    scheduled: EventDraft
    plan: RetryPlan


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Out of attempts: the lead goes on with the error, the input is dead-lettered with this."""

    error: str


def with_attempt(
    result: StepResult, attempt: int, retry: RetrySettings | None, cause: str | None = None
) -> StepResult:
    """A later attempt's events begin with ``retry.attempted``, which says which attempt it is
    (``retry_status`` ``completed`` on the last one, whatever it decides) and the failure it
    retries (``cause``: carried with the parked input, ``RetryPlan.cause``)."""
    if attempt <= 1 or retry is None:
        return result
    attempted = EventDraft(
        "retry.attempted",
        "success",
        f"Attempt {attempt} of {retry.attempts}",
        entity_id=result.events[0].entity_id,
        retry_status="completed" if attempt >= retry.attempts else None,
        original_failure=cause,
    )
    return StepResult([attempted, *result.events], result.proceed)


def retry_or_give_up(
    last: EventDraft, attempt: int, retry: RetrySettings | None, decided_ms: int
) -> TryAgain | GiveUp | None:
    """What becomes of a step whose last event is ``last`` on attempt ``attempt``.

    None when the result stands as it is: no error, no retry policy, or a policy of a
    single attempt (nothing was retried, so there is nothing to give up on).
    """
    if retry is None or last.outcome != "error":
        return None
    if attempt < retry.attempts:
        following = attempt + 1
        delay = retry.delay_ms(following)
        scheduled = EventDraft(
            "retry.scheduled",
            "success",
            f"Attempt {following} of {retry.attempts} in {delay}ms after: {last.reason}",
            entity_id=last.entity_id,
            retry_status="started",
            original_failure=last.reason,
        )
        return TryAgain(scheduled, RetryPlan(following, decided_ms + delay, last.reason))
    if retry.attempts > 1:
        return GiveUp(f"Retries exhausted after {attempt} attempts: {last.reason}")
    return None
