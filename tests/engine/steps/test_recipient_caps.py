"""Recipient caps: which caps a delivery counts in, what a full cap means for the lead, and
which answers keep the lead's slot (only a delivery counts)."""

from __future__ import annotations

import pytest

from engine.caps import CapSpec
from engine.ids import id_timestamp_ms
from engine.steps.base import EventDraft, StepResult
from engine.steps.cap_checks import CapCount, cap_checks, recipient_scope
from engine.steps.recipient import (
    RecipientSettings,
    cap_full,
    recipient_caps,
    submitted_at,
    within_caps,
)

LEAD_ID = "01KB0000000000000000000000"
SUBMITTED_MS = 1_772_366_400_000  # 2026-03-01 12:00 UTC
DAILY = CapSpec(maximum=3)
WEEKEND = CapSpec(maximum=10, duration="week", name="Weekend buyers")
SETTINGS = RecipientSettings(url="http://buyer.test/leads", caps=[DAILY, WEEKEND])  # type: ignore[arg-type]


def full(spec: CapSpec = DAILY) -> CapCount:
    (check,) = cap_checks(recipient_scope("solar", "premier"), [spec], SUBMITTED_MS)
    return CapCount(check, spec.maximum, holds_lead=False)


def test_the_windows_come_from_the_submission_time_never_the_clock() -> None:
    snapshot = {"submission.timestamp": SUBMITTED_MS}
    assert submitted_at(LEAD_ID, snapshot) == SUBMITTED_MS
    checks = recipient_caps("solar", "premier", SETTINGS, LEAD_ID, snapshot)
    assert [c.key for c in checks] == [
        "recipient:solar/premier:day@UTC",
        "recipient:solar/premier:week@UTC:Weekend buyers",
    ]
    assert all(SUBMITTED_MS in c.window for c in checks)


@pytest.mark.parametrize("snapshot", [{}, {"submission.timestamp": None}])
def test_a_lead_without_a_submission_time_is_placed_by_its_id(snapshot: dict[str, None]) -> None:
    assert submitted_at(LEAD_ID, snapshot) == id_timestamp_ms(LEAD_ID)


def test_a_recipient_without_caps_counts_nowhere() -> None:
    uncapped = SETTINGS.model_copy(update={"caps": []})
    assert recipient_caps("solar", "premier", uncapped, LEAD_ID, {}) == []


def test_at_a_full_cap_the_lead_fails_here_and_goes_on() -> None:
    result = cap_full("premier", full())
    assert result.proceed
    (failed,) = result.events
    assert (failed.type, failed.outcome, failed.reason) == (
        "recipient.failed",
        "failure",
        "Daily cap reached (3/3)",
    )
    assert (failed.entity_id, failed.revenue, failed.cap_reached) == ("premier", 0.0, True)
    assert failed.request is None  # the buyer was never called


def test_a_full_named_cap_is_named() -> None:
    assert cap_full("premier", full(WEEKEND)).last.reason == (
        'Weekly cap "Weekend buyers" reached (10/10)'
    )


def test_a_delivered_lead_keeps_its_slots() -> None:
    delivered = EventDraft("recipient.delivered", "success", revenue=12.0)
    capped = within_caps(StepResult([delivered], proceed=True))
    assert capped.keep_slots
    assert [(d.type, d.cap_reached, d.revenue) for d in capped.result.events] == [
        ("recipient.delivered", False, 12.0)
    ]
    assert capped.result.proceed


@pytest.mark.parametrize(
    "answer",
    [
        EventDraft("recipient.failed", "failure", "Rejected by buyer", revenue=0.0),
        EventDraft("recipient.error", "error", "Buyer timeout after 5000ms"),
    ],
)
def test_a_refused_or_failed_delivery_gives_its_slots_back(answer: EventDraft) -> None:
    capped = within_caps(StepResult([answer], proceed=True))
    assert not capped.keep_slots
    (judged,) = capped.result.events
    assert (judged.type, judged.reason, judged.cap_reached) == (answer.type, answer.reason, False)
