"""Source acceptance: every submission is recorded, then accepted or rejected with a reason."""

from typing import Any

import orjson
import pytest

from engine.steps.base import TOTAL_COST, TOTAL_DELIVERED, TOTAL_REVENUE, EventDraft, StepResult
from engine.steps.rules import RuleSet
from engine.steps.source import (
    MAX_RAW_FIELDS,
    FieldSpec,
    SourceSettings,
    Submission,
    accept_submission,
)

SETTINGS = SourceSettings(
    cost=2.5,
    fields=[
        FieldSpec(name="first_name", required=True),
        FieldSpec(name="email", type="email", required=True),
        FieldSpec(name="phone_1", type="phone", required=True),
        FieldSpec(name="state", type="state"),
    ],
)
GOOD = {"first_name": "Ada", "email": "Ada@Example.com", "phone_1": "512-555-0123", "state": "tx"}


def submit(body: bytes) -> Submission:
    return Submission(body, "01LEAD", 1000, "demo", "Demo", "web", "Web form")


def test_a_good_lead_is_submitted_then_accepted_with_typed_fields_and_cost() -> None:
    result = accept_submission(submit(orjson.dumps(GOOD)), SETTINGS)
    assert [e.type for e in result.events] == ["source.submitted", "source.accepted"]
    assert result.proceed
    submitted, accepted = result.events
    assert submitted.vars["lead.email"] == "Ada@Example.com"  # raw, before parsing
    assert submitted.request is not None and "Ada@Example.com" in submitted.request["body"]
    assert accepted.vars["lead.email"] == "ada@example.com"
    assert accepted.vars["lead.email.domain"] == "example.com"
    assert accepted.vars["lead.phone_1.area"] == "512"
    assert accepted.vars["lead.state"] == "TX"
    assert accepted.vars["lead.id"] == "01LEAD"
    assert accepted.cost == 2.5
    assert accepted.vars[TOTAL_COST] == 2.5


def test_missing_required_field_rejects_with_the_field_named() -> None:
    lead = {k: v for k, v in GOOD.items() if k != "email"}
    result = accept_submission(submit(orjson.dumps(lead)), SETTINGS)
    assert [e.type for e in result.events] == ["source.submitted", "source.rejected"]
    assert not result.proceed
    assert result.last.outcome == "failure"
    assert result.last.reason == "Missing required field: email"


def test_wrong_types_reject_with_every_problem() -> None:
    lead = {**GOOD, "email": 12345, "phone_1": "555-12"}
    result = accept_submission(submit(orjson.dumps(lead)), SETTINGS)
    assert result.last.reason == (
        "Invalid email: expected an email address, got int; "
        "Invalid phone_1: expected 10 digits, got 5"
    )


def test_text_that_is_not_json_is_rejected_not_raised() -> None:
    result = accept_submission(submit(b'{"first_name": "Broken", "email": '), SETTINGS)
    assert [e.type for e in result.events] == ["source.submitted", "source.rejected"]
    assert result.last.reason is not None and result.last.reason.startswith("Invalid JSON")
    assert result.events[0].request is not None
    assert result.events[0].request["body"] == '{"first_name": "Broken", "email": '


def test_json_that_is_not_an_object_is_rejected() -> None:
    result = accept_submission(submit(b"[1, 2, 3]"), SETTINGS)
    assert result.last.reason == "Invalid lead: expected a JSON object"


def test_invalid_optional_field_is_kept_as_invalid_without_rejecting() -> None:
    result = accept_submission(submit(orjson.dumps({**GOOD, "state": "Atlantis"})), SETTINGS)
    assert result.proceed
    assert result.last.vars["lead.state.valid"] is False


def test_unknown_fields_are_recorded_as_submitted_but_not_accepted() -> None:
    result = accept_submission(submit(orjson.dumps({**GOOD, "outcome": "hacked"})), SETTINGS)
    submitted, accepted = result.events
    assert submitted.vars["lead.outcome"] == "hacked"
    assert "lead.outcome" not in accepted.vars


def accept(
    lead: dict[str, Any] | bytes, settings: SourceSettings = SETTINGS, submitted_ms: int = 1000
) -> StepResult:
    body = lead if isinstance(lead, bytes) else orjson.dumps(lead)
    return accept_submission(
        Submission(body, "01LEAD", submitted_ms, "demo", "Demo", "web", "Web form"), settings
    )


def test_a_short_phone_says_how_many_digits_it_had() -> None:
    result = accept({**GOOD, "phone_1": "512-555-012"})
    assert result.last.reason == "Invalid phone_1: expected 10 digits, got 9"


# --- nothing submitted can pass for derived data -----------------------------------

INJECTED = {
    "outcome": "success",
    "reason": None,
    "appended": "x",
    "appended.trustedform.outcome": "success",
    "email.valid": True,
    "email.domain": "evil.example",
    "phone_1.is_tollfree": True,
    "lead.email": "other@example.com",
    "totals.cost": 0,
    "submission.timestamp": 1,
    "flow.id": "other-flow",
    "source.name": "Trusted partner",
    "id": "01FORGED",
}


def test_submitted_keys_cannot_inject_into_the_accepted_snapshot() -> None:
    result = accept({**GOOD, **INJECTED})
    assert result.proceed
    accepted = result.last
    assert set(accepted.vars) == {
        "lead.id",
        "submission.timestamp",
        "flow.id",
        "flow.name",
        "source.id",
        "source.name",
        "lead.first_name",
        "lead.email",
        "lead.email.valid",
        "lead.email.domain",
        "lead.phone_1",
        "lead.phone_1.valid",
        "lead.phone_1.prefix",
        "lead.phone_1.country_code",
        "lead.phone_1.area",
        "lead.phone_1.exchange",
        "lead.phone_1.line",
        "lead.phone_1.is_tollfree",
        "lead.state",
        "lead.state.valid",
        TOTAL_COST,
        TOTAL_REVENUE,
        TOTAL_DELIVERED,
    }
    assert accepted.vars["lead.id"] == "01LEAD"
    assert accepted.vars["lead.email"] == "ada@example.com"
    assert accepted.vars["lead.email.domain"] == "example.com"
    assert accepted.vars["lead.phone_1.is_tollfree"] is False
    assert accepted.vars["submission.timestamp"] == 1000
    assert accepted.vars["flow.id"] == "demo"
    assert accepted.vars["source.name"] == "Web form"
    assert accepted.vars[TOTAL_COST] == 2.5


def test_such_keys_stay_in_the_raw_record_under_lead() -> None:
    submitted = accept({**GOOD, **INJECTED}).events[0]
    assert submitted.vars["lead.outcome"] == "success"
    assert submitted.vars["lead.appended.trustedform.outcome"] == "success"
    assert submitted.vars["lead.totals.cost"] == 0
    assert submitted.vars["lead.flow.id"] == "other-flow"
    assert "outcome" not in submitted.vars
    assert "appended.trustedform.outcome" not in submitted.vars
    assert submitted.vars["flow.id"] == "demo"
    assert submitted.vars["submission.timestamp"] == 1000


def test_a_submitted_id_does_not_pass_for_the_lead_id_even_raw() -> None:
    submitted = accept({**GOOD, "id": "01FORGED"}).events[0]
    assert submitted.vars["lead.id"] == "01LEAD"


def test_the_raw_record_is_bounded_however_many_keys_are_sent() -> None:
    lead = {**GOOD, **{f"k{i}": i for i in range(2 * MAX_RAW_FIELDS)}, "x" * 1000: "long key"}
    submitted = accept(lead).events[0]
    assert len([k for k in submitted.vars if k.startswith("lead.") and k != "lead.id"]) == (
        MAX_RAW_FIELDS
    )
    assert max(len(k) for k in submitted.vars) <= len("lead.") + 128


# --- acceptance criteria ---------------------------------------------------------

CRITERIA = {
    "rules": [
        {"name": "Adult", "field": "lead.age", "op": "gte", "value": 18},
        {"not": {"field": "lead.phone_1.is_tollfree", "op": "equals", "value": True}},
    ]
}
ACCEPTING = SourceSettings(
    fields=[
        FieldSpec(name="email", type="email", required=True),
        FieldSpec(name="age", type="number", required=True),
        FieldSpec(name="phone_1", type="phone"),
    ],
    acceptance=RuleSet.model_validate(CRITERIA),
)
ADULT = {"email": "ada@example.com", "age": "42", "phone_1": "512-555-0123"}


def criteria_of(event: EventDraft) -> Any:
    """The criteria as configured, read back from the event's structured record."""
    assert event.acceptance_criteria is not None
    recorded = event.acceptance_criteria
    return {
        "match": recorded["match"],
        "rules": [orjson.loads(r["rule"]) for r in recorded["rules"]],
    }


def results_of(event: EventDraft) -> list[tuple[str, bool | None, dict[str, str]]]:
    assert event.acceptance_criteria is not None
    return [
        (r["name"], r["passed"], r["failed_values"]) for r in event.acceptance_criteria["rules"]
    ]


NOT_TOLLFREE = "not (lead.phone_1.is_tollfree equals True)"


def test_a_lead_meeting_the_criteria_is_accepted_and_both_events_record_them() -> None:
    result = accept(ADULT, ACCEPTING)
    assert [e.type for e in result.events] == ["source.submitted", "source.accepted"]
    recorded = {"match": "all", **CRITERIA}
    assert [criteria_of(e) for e in result.events] == [recorded, recorded]
    submitted, accepted = result.events
    # source.submitted is before any parsing: the criteria are not judged yet.
    assert submitted.acceptance_criteria is not None
    assert submitted.acceptance_criteria["passed"] is None
    assert results_of(submitted) == [("Adult", None, {}), (NOT_TOLLFREE, None, {})]
    assert accepted.acceptance_criteria is not None
    assert accepted.acceptance_criteria["passed"] is True
    assert results_of(accepted) == [("Adult", True, {}), (NOT_TOLLFREE, True, {})]


def test_a_lead_failing_the_criteria_is_rejected_with_the_rule_and_value() -> None:
    result = accept({**ADULT, "age": 16}, ACCEPTING)
    assert [e.type for e in result.events] == ["source.submitted", "source.rejected"]
    assert not result.proceed
    rejected = result.last
    assert rejected.outcome == "failure"
    assert rejected.reason == "Acceptance criteria not met: Adult: lead.age is 16"
    assert rejected.vars["lead.age"] == 16.0
    assert TOTAL_COST not in rejected.vars
    assert criteria_of(rejected) == {"match": "all", **CRITERIA}
    assert rejected.acceptance_criteria is not None
    assert rejected.acceptance_criteria["passed"] is False
    assert results_of(rejected) == [("Adult", False, {"lead.age": "16"}), (NOT_TOLLFREE, True, {})]


def test_criteria_read_parsed_components() -> None:
    result = accept({**ADULT, "phone_1": "(800) 555-0199"}, ACCEPTING)
    assert result.last.reason == (
        "Acceptance criteria not met: not (lead.phone_1.is_tollfree equals True): "
        "lead.phone_1.is_tollfree is True"
    )


def test_criteria_are_judged_on_what_was_typed_and_a_bad_field_is_named_once() -> None:
    result = accept({"email": "ada@example.com", "age": "sixteen"}, ACCEPTING)
    assert result.last.reason == "Invalid age: expected a number"
    assert result.last.field_errors == [
        {"field": "age", "check": "type", "message": "Invalid age: expected a number"}
    ]
    assert result.last.acceptance_criteria is not None
    assert result.last.acceptance_criteria["passed"] is False
    result = accept({"email": "ada@example.com"}, ACCEPTING)
    assert result.last.reason == "Missing required field: age"
    assert [e["check"] for e in result.last.field_errors or []] == ["required"]


def test_each_failed_validation_is_a_field_error() -> None:
    result = accept({"email": "not-an-email", "age": "16"}, ACCEPTING)
    assert result.last.type == "source.rejected"
    errors = result.last.field_errors or []
    assert [(e["field"], e["check"]) for e in errors] == [("email", "type"), ("age", "acceptance")]
    assert result.last.reason == "; ".join(e["message"] for e in errors)
    body = accept(b"not json", ACCEPTING).last.field_errors
    assert body is not None and [(e["field"], e["check"]) for e in body] == [(None, "body")]


def test_a_rejection_before_parsing_still_records_the_criteria() -> None:
    result = accept(b"not json", ACCEPTING)
    assert result.last.type == "source.rejected"
    assert all(e.acceptance_criteria for e in result.events)


def test_without_criteria_none_are_recorded() -> None:
    assert [e.acceptance_criteria for e in accept(GOOD).events] == [None, None]


def test_criteria_can_judge_the_submission_time() -> None:
    office = SourceSettings(
        fields=[FieldSpec(name="email", type="email", required=True)],
        acceptance=RuleSet.model_validate(
            {
                "rules": [
                    {
                        "name": "Office hours",
                        "op": "time_of_day",
                        "from": "08:00",
                        "to": "18:00",
                        "time_zone": "America/New_York",
                    }
                ]
            }
        ),
    )
    at_noon_new_york = 1_705_338_000_000  # 2024-01-15T17:00Z
    assert accept(ADULT, office, at_noon_new_york).proceed
    late = at_noon_new_york + 7 * 3_600_000
    assert accept(ADULT, office, late).last.reason == (
        f"Acceptance criteria not met: Office hours: submission.timestamp is {late} "
        "(Mon 2024-01-15 19:00 EST)"
    )


def test_any_match_criteria_list_every_rule_that_failed() -> None:
    either = SourceSettings(
        fields=[FieldSpec(name="email", type="email"), FieldSpec(name="age", type="number")],
        acceptance=RuleSet.model_validate(
            {
                "match": "any",
                "rules": [
                    {"field": "lead.email", "op": "exists"},
                    {"field": "lead.age", "op": "exists"},
                ],
            }
        ),
    )
    assert accept({}, either).last.reason == (
        "Acceptance criteria not met: No rule matched: lead.email exists: lead.email is missing; "
        "lead.age exists: lead.age is missing"
    )


# --- social security numbers: masked everywhere ------------------------------------

SSN = SourceSettings(
    fields=[FieldSpec(name="first_name", required=True), FieldSpec(name="ssn", type="ssn")]
)
REQUIRED_SSN = SSN.model_copy(update={"fields": [FieldSpec(name="ssn", type="ssn", required=True)]})


def everything(result: StepResult) -> str:
    """Every event as it would be recorded, reasons and requests included."""
    return orjson.dumps(
        [{s: getattr(e, s) for s in EventDraft.__slots__} for e in result.events]  # type: ignore[attr-defined]
    ).decode()


@pytest.mark.parametrize("raw", ["123-45-6789", "123 45 6789", "123456789", 123456789])
def test_an_ssn_is_masked_in_every_event(raw: str | int) -> None:
    result = accept({"first_name": "Ada", "ssn": raw}, SSN)
    submitted, accepted = result.events
    assert accepted.vars["lead.ssn"] == "***-**-6789"
    assert accepted.vars["lead.ssn.masked"] == "***-**-6789"
    assert accepted.vars["lead.ssn.last_four"] == "6789"
    assert accepted.vars["lead.ssn.valid"] is True
    assert submitted.vars["lead.ssn"] == "***-**-6789"
    assert submitted.request is not None and "***-**-6789" in submitted.request["body"]
    text = everything(result)
    for clear in ("123456789", "123-45-6789", "123 45 6789", "12345"):
        assert clear not in text


def test_an_ssn_under_another_spelling_of_its_key_is_masked_too() -> None:
    result = accept({"first_name": "Ada", "SSN ": "123-45-6789"}, SSN)
    assert result.events[0].vars["lead.SSN "] == "***-**-6789"
    assert "123-45-6789" not in everything(result)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1234-5678", "Invalid ssn: expected 9 digits, got 8"),
        ("666-12-3456", "Invalid ssn: not a valid SSN: area 000, 666 or 900-999, "),
        ({"number": "123-45-6789"}, "Invalid ssn: expected a social security number, got dict"),
    ],
)
def test_an_invalid_ssn_is_rejected_without_repeating_it(raw: Any, reason: str) -> None:
    result = accept({"ssn": raw}, REQUIRED_SSN)
    assert result.last.reason is not None and result.last.reason.startswith(reason)
    text = everything(result)
    for clear in ("12345678", "1234-5678", "666-12-3456", "666123456", "123-45-6789"):
        assert clear not in text


def test_an_ssn_in_a_body_that_is_not_json_is_masked_in_the_request() -> None:
    result = accept(b'{"first_name": "Ada", "ssn": "123-45-6789", ', SSN)
    assert result.last.reason is not None and result.last.reason.startswith("Invalid JSON")
    request = result.events[0].request
    assert request is not None and '"ssn": "***-**-6789"' in request["body"]
    assert "123-45-6789" not in everything(result)


# --- dates -----------------------------------------------------------------------

DATED = SourceSettings(
    fields=[
        FieldSpec(name="dob", type="date", required=True),
        FieldSpec(name="callback_at", type="datetime"),
    ]
)


def test_dates_are_normalised_to_iso_with_their_components() -> None:
    result = accept({"dob": "04/15/1990", "callback_at": "2024-01-15T09:30:00-06:00"}, DATED)
    assert result.proceed
    snapshot = result.last.vars
    assert snapshot["lead.dob"] == "1990-04-15"
    assert (snapshot["lead.dob.year"], snapshot["lead.dob.month"], snapshot["lead.dob.day"]) == (
        1990,
        4,
        15,
    )
    assert snapshot["lead.callback_at"] == "2024-01-15T15:30:00.000Z"


def test_an_impossible_date_rejects_the_lead_and_says_why() -> None:
    result = accept({"dob": "02/30/1990"}, DATED)
    assert result.last.reason == ("Invalid dob: not a calendar date: day is out of range for month")


def test_an_invalid_optional_date_is_kept_as_invalid() -> None:
    result = accept({"dob": "1990-04-15", "callback_at": "tomorrow"}, DATED)
    assert result.proceed
    assert result.last.vars["lead.callback_at"] == "tomorrow"
    assert result.last.vars["lead.callback_at.valid"] is False


# -- what source events record besides the verdict (schema v5) -----------------------------


def test_source_submitted_records_the_arrival_so_parsing_time_is_measured() -> None:
    submitted, accepted = accept(GOOD, submitted_ms=1234).events
    assert submitted.at_ms == 1234  # the arrival: stamped before any parsing
    assert accepted.at_ms is None  # the end of the step's handling, stamped by the runtime


def test_every_source_event_names_the_client_and_the_source_configuration() -> None:
    sub = Submission(
        orjson.dumps(GOOD), "01LEAD", 1000, "demo", "Demo", "web", "Web", client_ip="203.0.113.7"
    )
    result = accept_submission(sub, SETTINGS)
    assert {e.client_ip for e in result.events} == {"203.0.113.7"}
    versions = {e.source_config_version for e in result.events}
    assert versions == {SETTINGS.config_version}
    assert len(SETTINGS.config_version) == 16
    # The version follows the configuration, and only it.
    cheaper = SETTINGS.model_copy(update={"cost": 1.0})
    assert (
        SourceSettings.model_validate(SETTINGS.model_dump()).config_version
        == SETTINGS.config_version
    )
    assert (
        SourceSettings.model_validate(cheaper.model_dump()).config_version
        != SETTINGS.config_version
    )


def _with_ping_limits() -> SourceSettings:
    return SourceSettings.model_validate(
        {
            **SETTINGS.model_dump(mode="json"),
            "intake": {
                "auth": {"key_env": "WEB_KEY"},
                "ping": {"fields": ["state"], "limits": [{"maximum": 10, "duration": "minute"}]},
            },
        }
    )


def test_a_lead_posted_for_a_ping_under_limits_says_no_limit_was_reached() -> None:
    limited = _with_ping_limits()
    body = orjson.dumps(GOOD)
    posted = Submission(body, "01LEAD", 1000, "demo", "Demo", "web", "Web", ping_id="01PING")
    assert {e.ping_limit_reached for e in accept_submission(posted, limited).events} == {False}
    # No ping, or no limits: nothing was evaluated, so nothing is said.
    plain = Submission(body, "01LEAD", 1000, "demo", "Demo", "web", "Web")
    assert {e.ping_limit_reached for e in accept_submission(plain, limited).events} == {None}
    assert {e.ping_limit_reached for e in accept_submission(posted, SETTINGS).events} == {None}
