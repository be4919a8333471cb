"""Enhancement: what is sent to a data service, and what its answer means for the lead."""

from typing import Any

import orjson
import pytest

from engine.flows import parse_flow
from engine.ids import event_id
from engine.steps.base import Snapshot, StepResult
from engine.steps.calls import Answer, Call
from engine.steps.enhancement import (
    MAX_DEPTH,
    MAX_FIELDS,
    MAX_VALUE,
    EnhancementSettings,
    build_request,
    flatten_answer,
    judge_enhancement,
    plan_enhancement,
)

URL = "http://127.0.0.1:8765/enhance/phone"
SETTINGS = EnhancementSettings(
    url=URL,
    key="phone_check",
    mapping={"phone": "lead.phone_1", "consent": "lead.tcpa_consent", "missing": "lead.nope"},
)
REQUIRED = SETTINGS.model_copy(update={"required": True})
LEAD: Snapshot = {"lead.phone_1": "5125550123", "lead.tcpa_consent": True, "lead.nope": None}


def answer(status: int | None, body: object = None, error: str | None = None) -> Answer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
    return Answer(status, {}, raw, error, wait_ms=7, sent_at_ms=1, received_at_ms=8)


def judge(a: Answer, settings: EnhancementSettings = SETTINGS) -> StepResult:
    request = build_request(LEAD, settings, "EVT1")
    return judge_enhancement(LEAD, settings, "phone-check", request, a)


FOUND = {
    "outcome": "success",
    "carrier": "Verizon",
    "line_type": "mobile",
    "location": {"area_code": "512", "geo": {"lat": 30.27, "tz": None}},
    "risk": 12,
    "ported": False,
    "owners": ["Ada", "Bob"],
}


# -- the request --------------------------------------------------------------------------


def test_request_maps_present_fields_as_json_with_the_idempotency_key() -> None:
    request = build_request(LEAD, SETTINGS, "EVT1")
    assert request.url == URL
    assert orjson.loads(request.body) == {"phone": "5125550123", "consent": True}
    assert request.headers == {
        "Idempotency-Key": "EVT1",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }


def test_the_plan_is_one_call_keyed_by_the_steps_first_event_on_every_attempt() -> None:
    lead = {**LEAD, "submission.timestamp": 1_764_000_000_000}
    planned = plan_enhancement("01KB0000000000000000000000", lead, SETTINGS, 1)
    key = event_id("01KB0000000000000000000000", 1_764_000_000_000, 1, 0)
    assert planned == Call(build_request(lead, SETTINGS, key), 5000, "Service")


def test_form_encoded_request() -> None:
    form = SETTINGS.model_copy(update={"format": "form"})
    request = build_request(LEAD, form, "EVT2")
    assert request.body == b"phone=5125550123&consent=true"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Idempotency-Key"] == "EVT2"


# -- success: the answer appended ------------------------------------------------------------


def test_success_appends_the_flattened_answer_under_the_key() -> None:
    result = judge(answer(200, FOUND))
    assert result.proceed
    [event] = result.events
    assert (event.type, event.outcome, event.reason) == ("enhancement.success", "success", None)
    assert event.appended == {
        "appended.phone_check.outcome": "success",
        "appended.phone_check.carrier": "Verizon",
        "appended.phone_check.line_type": "mobile",
        "appended.phone_check.location.area_code": "512",
        "appended.phone_check.location.geo.lat": 30.27,
        "appended.phone_check.location.geo.tz": None,
        "appended.phone_check.risk": 12,
        "appended.phone_check.ported": False,
        "appended.phone_check.owners": '["Ada","Bob"]',
    }
    # In the snapshot too, where later filters and mappings look.
    assert event.vars == event.appended
    assert (event.key, event.entity_id, event.wait_ms) == ("phone_check", "phone-check", 7)


def test_the_call_is_recorded_like_a_delivery() -> None:
    event = judge(answer(200, FOUND)).last
    assert event.request == {
        "method": "POST",
        "uri": URL,
        "headers": {
            "Idempotency-Key": "EVT1",
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
        "body": '{"phone":"5125550123","consent":true}',
        "timestamp": 1,
    }
    assert event.response is not None
    assert (event.response["status"], event.response["timestamp"]) == (200, 8)
    assert orjson.loads(event.response["body"]) == FOUND


def test_flattening_bounds_what_travels_with_the_lead() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(MAX_DEPTH + 2):
        deep = {"d": deep}
    flat = flatten_answer(
        {
            "long": "x" * (MAX_VALUE + 10),
            "huge": 2**70,
            "deep": deep,
            "many": {f"f{i}": i for i in range(MAX_FIELDS + 10)},
        },
        "appended.k",
    )
    assert flat["appended.k.long"] == "x" * MAX_VALUE
    assert flat["appended.k.huge"] == str(2**70)  # no Avro long holds it
    [kept_deep] = [k for k in flat if k.startswith("appended.k.deep")]
    assert len(kept_deep.removeprefix("appended.k.").split(".")) == MAX_DEPTH
    assert flat[kept_deep] == '{"d":{"d":{"d":{"leaf":1}}}}'  # the rest, as JSON text
    assert len(flat) == MAX_FIELDS


def test_success_rule_and_reason_path_are_configurable() -> None:
    custom = EnhancementSettings.model_validate(
        {
            "url": URL,
            "key": "phone_check",
            "success": {"path": "result.valid", "value": True},
            "reason_path": "result.why",
        }
    )
    assert judge(answer(200, {"result": {"valid": True}}), custom).last.type == (
        "enhancement.success"
    )
    failed = judge(answer(200, {"result": {"valid": False, "why": "Disconnected"}}), custom).last
    assert (failed.type, failed.reason) == ("enhancement.failure", "Disconnected")


# -- failure: the service said no -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"outcome": "failure", "reason": "Phone not found"}, "Phone not found"),
        ({"outcome": "failure"}, "Service found no data"),
        ({"outcome": "failure", "reason": ""}, "Service found no data"),
        ({"carrier": "Verizon"}, "Service found no data"),  # no success marker: no data
    ],
)
def test_service_that_cannot_help_is_a_failure_and_appends_nothing(
    body: dict[str, Any], reason: str
) -> None:
    result = judge(answer(200, body))
    [event] = result.events
    assert (event.type, event.outcome, event.reason) == ("enhancement.failure", "failure", reason)
    assert event.appended == {} and event.vars == {}
    assert event.key == "phone_check" and event.response is not None
    assert result.proceed


def test_a_client_error_with_a_readable_answer_is_the_service_saying_no() -> None:
    result = judge(answer(422, {"outcome": "failure", "reason": "Not a phone number"}))
    assert (result.last.type, result.last.reason) == ("enhancement.failure", "Not a phone number")


# -- error: nothing usable came back --------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "reason"),
    [
        (answer(None, error="Service timeout after 5000ms"), "Service timeout after 5000ms"),
        (
            answer(None, error="Service unreachable: ConnectError"),
            "Service unreachable: ConnectError",
        ),
        (answer(500, {"error": "boom"}), "Service answered HTTP 500"),
        (answer(503, FOUND), "Service answered HTTP 503"),
        (answer(401, FOUND), "Service answered HTTP 401"),
        (answer(403, {}), "Service answered HTTP 403"),
        (answer(404, {}), "Service answered HTTP 404"),
        (answer(429, {}), "Service answered HTTP 429"),
        (answer(200, b"<html>oops</html>"), "Unreadable service response: not JSON"),
        (answer(200, None), "Unreadable service response: not JSON"),
        (answer(200, ["success"]), "Unreadable service response: not a JSON object"),
    ],
)
def test_technical_problems_are_errors_and_append_nothing(a: Answer, reason: str) -> None:
    result = judge(a)
    [event] = result.events
    assert (event.type, event.outcome, event.reason) == ("enhancement.error", "error", reason)
    assert event.appended == {} and event.vars == {}
    assert event.key == "phone_check" and event.request is not None
    assert result.proceed
    assert (event.response is None) == (a.status is None)


# -- required: no data, no lead -------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "type_"),
    [
        (answer(200, FOUND), "enhancement.success"),
        (answer(200, {"outcome": "failure"}), "enhancement.failure"),
        (answer(None, error="Service timeout after 5000ms"), "enhancement.error"),
        (answer(500, {}), "enhancement.error"),
    ],
)
def test_only_a_required_enhancement_stops_the_lead_without_data(a: Answer, type_: str) -> None:
    optional, required = judge(a), judge(a, REQUIRED)
    assert optional.last.type == required.last.type == type_
    assert optional.proceed
    assert required.proceed is (type_ == "enhancement.success")


# -- settings -------------------------------------------------------------------------------


def test_an_enhancement_step_in_a_flow_file() -> None:
    flow = parse_flow(
        f"""
id: f
name: F
steps:
  - {{id: source, kind: source, name: S, settings: {{fields: [{{name: phone_1, type: phone}}]}}}}
  - id: phone-check
    kind: enhancement
    name: Phone check
    settings:
      url: {URL}
      key: phone_check
      timeout_ms: 300
      required: true
      mapping: {{phone: lead.phone_1}}
      success: {{path: status, value: found}}
"""
    )
    settings = flow.step("phone-check").settings
    assert isinstance(settings, EnhancementSettings)
    assert (settings.success.path, settings.success.value) == ("status", "found")
    assert settings.required and settings.timeout_ms == 300


def test_a_misspelt_success_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="valu"):
        EnhancementSettings.model_validate(
            {"url": URL, "key": "k", "success": {"path": "ok", "valu": True}}
        )


# -- cost incurred, timeouts (schema v5) -----------------------------------------------------


def test_an_answered_lookup_costs_its_price_and_adds_it_to_the_leads_cost() -> None:
    paid = SETTINGS.model_copy(update={"cost": 0.25})
    lead = {**LEAD, "totals.cost": 2.5}
    request = build_request(lead, paid, "EVT1")
    found = judge_enhancement(lead, paid, "phone-check", request, answer(200, FOUND)).last
    assert (found.type, found.cost, found.vars["totals.cost"]) == (
        "enhancement.success",
        0.25,
        2.75,
    )
    none = judge_enhancement(lead, paid, "phone-check", request, answer(200, {"outcome": "x"}))
    assert (none.last.type, none.last.cost, none.last.vars["totals.cost"]) == (
        "enhancement.failure",
        0.25,
        2.75,
    )


def test_a_free_lookup_costs_nothing_and_leaves_the_snapshot_alone() -> None:
    found = judge(answer(200, FOUND)).last
    assert found.cost == 0.0
    assert "totals.cost" not in found.vars


def test_an_error_costs_nothing_and_says_whether_the_call_timed_out() -> None:
    timed_out = Answer(None, {}, b"", "Service timeout after 5000ms", 5000, 1, 5001, timed_out=True)
    error = judge(timed_out).last
    assert (error.type, error.cost, error.timeout_ms, error.timed_out) == (
        "enhancement.error",
        0.0,
        5000,
        True,
    )
    refused = judge(answer(None, error="Service connection refused")).last
    assert (refused.timeout_ms, refused.timed_out) == (5000, False)
