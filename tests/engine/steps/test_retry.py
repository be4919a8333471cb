"""Retries: a technical error is tried again later, until the attempts run out; then the lead
goes on with the error and the input is kept for an operator."""

from engine.retries import RetrySettings
from engine.steps.base import EventDraft, StepResult
from engine.steps.retry import GiveUp, RetryPlan, TryAgain, retry_or_give_up, with_attempt

THREE = RetrySettings(attempts=3, initial_backoff_ms=100, max_backoff_ms=250, multiplier=2.0)
DECIDED = 1_764_000_000_000
ERROR = EventDraft("recipient.error", "error", "Buyer answered HTTP 503", entity_id="premier")


def test_an_error_before_the_last_attempt_is_tried_again_after_the_backoff() -> None:
    decision = retry_or_give_up(ERROR, 1, THREE, DECIDED)
    assert isinstance(decision, TryAgain)
    assert decision.plan == RetryPlan(attempt=2, due_ms=DECIDED + 100, cause=ERROR.reason)
    scheduled = decision.scheduled
    assert (scheduled.type, scheduled.outcome, scheduled.entity_id, scheduled.retry_status) == (
        "retry.scheduled",
        "success",
        "premier",
        "started",
    )
    assert scheduled.reason == "Attempt 2 of 3 in 100ms after: Buyer answered HTTP 503"
    assert scheduled.original_failure == "Buyer answered HTTP 503"


def test_each_retry_waits_longer_up_to_the_maximum_backoff() -> None:
    second = retry_or_give_up(ERROR, 2, THREE, DECIDED)
    assert isinstance(second, TryAgain)
    assert second.plan == RetryPlan(attempt=3, due_ms=DECIDED + 200, cause=ERROR.reason)
    five = THREE.model_copy(update={"attempts": 5})
    fourth = retry_or_give_up(ERROR, 3, five, DECIDED)
    assert isinstance(fourth, TryAgain)
    assert fourth.plan.due_ms == DECIDED + 250  # 400 capped at 250
    assert fourth.scheduled.reason == "Attempt 4 of 5 in 250ms after: Buyer answered HTTP 503"


def test_the_last_attempts_error_is_final_and_the_input_is_dead_lettered() -> None:
    assert retry_or_give_up(ERROR, 3, THREE, DECIDED) == GiveUp(
        "Retries exhausted after 3 attempts: Buyer answered HTTP 503"
    )


def test_an_attempt_past_the_policy_gives_up_too() -> None:
    """The policy may have been lowered since the retry was parked (a new flow version)."""
    assert retry_or_give_up(ERROR, 7, THREE, DECIDED) == GiveUp(
        "Retries exhausted after 7 attempts: Buyer answered HTTP 503"
    )


def test_a_single_attempt_policy_lets_the_error_stand_without_a_dead_letter() -> None:
    once = RetrySettings(attempts=1)
    assert retry_or_give_up(ERROR, 1, once, DECIDED) is None


def test_without_a_policy_an_error_stands() -> None:
    assert retry_or_give_up(ERROR, 1, None, DECIDED) is None


def test_answers_that_are_not_errors_are_never_retried() -> None:
    for last in (
        EventDraft("recipient.failed", "failure", "Rejected by buyer"),
        EventDraft("recipient.delivered", "success"),
        EventDraft("enhancement.failure", "failure", "Service found no data"),
    ):
        assert retry_or_give_up(last, 1, THREE, DECIDED) is None


def test_the_first_attempt_records_no_retry_attempted() -> None:
    result = StepResult([ERROR], proceed=True)
    assert with_attempt(result, 1, THREE) is result


def test_a_later_attempt_begins_with_retry_attempted() -> None:
    delivered = EventDraft("recipient.delivered", "success", entity_id="premier")
    result = with_attempt(StepResult([delivered], proceed=True), 2, THREE)
    attempted, then = result.events
    assert then is delivered and result.proceed
    assert (attempted.type, attempted.outcome, attempted.reason) == (
        "retry.attempted",
        "success",
        "Attempt 2 of 3",
    )
    assert (attempted.entity_id, attempted.retry_status) == ("premier", None)


def test_the_last_attempt_is_marked_completed_whatever_it_decides() -> None:
    result = with_attempt(StepResult([ERROR], proceed=True), 3, THREE)
    assert result.events[0].retry_status == "completed"
    assert result.events[0].reason == "Attempt 3 of 3"


def test_a_step_without_a_policy_never_counts_attempts() -> None:
    result = StepResult([ERROR], proceed=True)
    assert with_attempt(result, 2, None) is result
