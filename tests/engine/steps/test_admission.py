"""Source admission: what an accepted lead is put to (caps, duplicates) and what the answer
means for it: admitted as it was, or rejected as a duplicate or over a full cap."""

from __future__ import annotations

import orjson

from engine.caps import CapSpec
from engine.steps.admission import AdmissionQuestion, admission_question, admit
from engine.steps.base import TOTAL_COST, TOTAL_DELIVERED, TOTAL_REVENUE, StepResult
from engine.steps.cap_checks import CapCount, cap_checks, flow_scope
from engine.steps.duplicates import LeadOrder, fingerprint
from engine.steps.source import FieldSpec, SourceSettings, Submission, accept_submission

SUBMITTED_MS = 1_772_366_400_000  # 2026-03-01 12:00 UTC
LEAD = LeadOrder(SUBMITTED_MS, "01KB0000000000000000000000")
EARLIER = LeadOrder(SUBMITTED_MS - 86_400_000, "01KA0000000000000000000000")
FIELDS = [
    FieldSpec(name="email", type="email", required=True),
    FieldSpec(name="phone_1", type="phone"),
]
PLAIN = SourceSettings(fields=FIELDS, cost=2.5)
HOURLY = CapSpec(maximum=10, duration="hour", name="Web")
CAPPED = PLAIN.model_copy(update={"caps": [HOURLY]})
DEDUPED = PLAIN.model_copy(update={"duplicate_window_days": 30})
DAILY = CapSpec(maximum=2)


def accepted(body: object = None, settings: SourceSettings = PLAIN) -> StepResult:
    raw = orjson.dumps(body or {"email": "Ada@Example.com", "phone_1": "512-555-0123"})
    sub = Submission(raw, LEAD.lead_id, SUBMITTED_MS, "solar", "Solar", "web", "Web form")
    result = accept_submission(sub, settings)
    assert result.proceed
    return result


def question(
    result: StepResult, settings: SourceSettings = PLAIN, flow_caps: list[CapSpec] | None = None
) -> AdmissionQuestion:
    asked = admission_question(result, LEAD, "solar", flow_caps or [], "web", settings)
    assert asked is not None
    return asked


def a_full(spec: CapSpec = DAILY) -> CapCount:
    (check,) = cap_checks(flow_scope("solar"), [spec], SUBMITTED_MS)
    return CapCount(check, spec.maximum, holds_lead=False)


# --- what is asked --------------------------------------------------------------------


def test_a_rejected_lead_is_put_to_nothing() -> None:
    sub = Submission(b"{}", LEAD.lead_id, SUBMITTED_MS, "solar", "Solar", "web", "Web form")
    rejected = accept_submission(sub, CAPPED)
    assert admission_question(rejected, LEAD, "solar", [DAILY], "web", CAPPED) is None


def test_an_accepted_lead_is_put_to_the_flows_caps_then_the_sources() -> None:
    asked = question(accepted(settings=CAPPED), CAPPED, flow_caps=[DAILY])
    assert asked.lead == LEAD
    assert [c.key for c in asked.checks] == ["flow:solar:day@UTC", "source:solar/web:hour@UTC:Web"]
    assert all(SUBMITTED_MS in c.window for c in asked.checks)
    assert asked.fingerprint is None  # duplicates are not checked


def test_without_caps_or_duplicate_checking_there_is_nothing_to_count() -> None:
    assert question(accepted()) == AdmissionQuestion(LEAD, [])


def test_duplicates_are_asked_about_by_the_fingerprint_of_the_duplicate_fields() -> None:
    result = accepted(settings=DEDUPED)
    asked = question(result, DEDUPED)
    assert asked.fingerprint == fingerprint("solar", result.last.vars, ["email", "phone_1"])
    assert asked.window_days == 30


def test_a_lead_with_none_of_the_duplicate_fields_can_be_no_ones_duplicate() -> None:
    settings = DEDUPED.model_copy(update={"duplicate_fields": ["postal_code"]})
    asked = question(accepted(settings=settings), settings)
    assert (asked.fingerprint, asked.window_days) == (None, 0)


# --- what the answer means ------------------------------------------------------------


def test_an_admitted_lead_goes_on_unchanged_but_for_its_cap_flag() -> None:
    result = accepted(settings=CAPPED)
    admitted = admit(result, question(result, CAPPED), None, None)
    assert admitted.proceed
    assert [e.type for e in admitted.events] == ["source.submitted", "source.accepted"]
    assert admitted.last.cap_reached is False
    assert admitted.last.vars == result.last.vars and admitted.last.cost == 2.5


def test_a_lead_put_to_no_cap_says_nothing_about_caps() -> None:
    result = accepted(settings=DEDUPED)
    admitted = admit(result, question(result, DEDUPED), None, None)
    assert admitted.last.cap_reached is None


def test_a_duplicate_is_rejected_with_the_day_of_the_earlier_lead() -> None:
    result = accepted(settings=DEDUPED)
    verdict = admit(result, question(result, DEDUPED), EARLIER, None)
    assert not verdict.proceed
    submitted, rejected = verdict.events
    assert submitted is result.events[0]
    assert (rejected.type, rejected.outcome, rejected.reason) == (
        "source.rejected",
        "failure",
        "Duplicate: previously submitted 2026-02-28",
    )
    assert (rejected.entity_id, rejected.cap_reached) == ("web", None)
    assert rejected.field_errors == [
        {"field": None, "check": "duplicate", "message": rejected.reason}
    ]


def test_a_duplicate_in_a_capped_flow_takes_no_slot_and_says_no_cap_was_full() -> None:
    settings = DEDUPED.model_copy(update={"caps": [HOURLY]})
    result = accepted(settings=settings)
    verdict = admit(result, question(result, settings), EARLIER, None)
    assert verdict.last.reason == "Duplicate: previously submitted 2026-02-28"
    assert verdict.last.cap_reached is False


def test_a_lead_over_a_full_cap_is_rejected_naming_the_cap() -> None:
    result = accepted(settings=CAPPED)
    verdict = admit(result, question(result, CAPPED, flow_caps=[DAILY]), None, a_full())
    assert not verdict.proceed
    assert verdict.last.type == "source.rejected"
    assert verdict.last.reason == "Cap reached: Daily flow cap (2/2)"
    assert verdict.last.cap_reached is True
    assert [(e["field"], e["check"]) for e in verdict.last.field_errors or []] == [(None, "cap")]


def test_a_rejected_lead_keeps_its_fields_but_no_running_totals() -> None:
    result = accepted(settings=CAPPED)
    verdict = admit(result, question(result, CAPPED), None, a_full())
    kept = verdict.last.vars
    assert kept["lead.email"] == "ada@example.com"
    assert not {TOTAL_COST, TOTAL_REVENUE, TOTAL_DELIVERED} & set(kept)
    assert verdict.last.cost is None
