"""Source acceptance: every submission is recorded, then accepted or rejected with a reason."""

import orjson

from engine.steps.source import FieldSpec, SourceSettings
from engine.steps.base import TOTAL_COST
from engine.steps.source import Submission, accept_submission

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
