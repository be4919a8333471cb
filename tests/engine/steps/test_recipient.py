"""Delivery: what is sent to a buyer, and what its answer means."""

import orjson
import pytest

from engine.caps import CapSpec
from engine.ids import event_id, id_timestamp_ms
from engine.steps.base import TOTAL_DELIVERED, TOTAL_REVENUE, StepResult
from engine.steps.calls import MAX_HEADER, MAX_ID, MAX_REASON, Answer, Call
from engine.steps.cap_checks import CapCount, cap_checks, recipient_scope
from engine.steps.recipient import (
    RecipientSettings,
    build_delivery,
    judge_delivery,
    plan_delivery,
)

SETTINGS = RecipientSettings(
    url="http://127.0.0.1:8765/leads",  # type: ignore[arg-type]
    mapping={"email": "lead.email", "phone": "lead.phone_1", "missing": "lead.nope"},
)
LEAD = {
    "lead.email": "ada@example.com",
    "lead.phone_1": "5125550123",
    TOTAL_REVENUE: 0.0,
    TOTAL_DELIVERED: 0,
}


def answer(status: int | None, body: object = None, error: str | None = None) -> Answer:
    raw = orjson.dumps(body) if body is not None else b""
    return Answer(status, {}, raw, error, wait_ms=12, sent_at_ms=1, received_at_ms=13)


def judge(a: Answer):  # type: ignore[no-untyped-def]
    delivery = build_delivery(LEAD, SETTINGS, "EVT1")
    return judge_delivery(LEAD, SETTINGS, "premier", delivery, a)


def test_delivery_maps_fields_and_carries_the_idempotency_key() -> None:
    delivery = build_delivery(LEAD, SETTINGS, "EVT1")
    assert orjson.loads(delivery.body) == {"email": "ada@example.com", "phone": "5125550123"}
    assert delivery.headers["Idempotency-Key"] == "EVT1"
    assert delivery.headers["Content-Type"] == "application/json"


def test_form_encoded_delivery() -> None:
    form = RecipientSettings(
        url="http://b.example/x", format="form", mapping={"email": "lead.email"}
    )  # type: ignore[arg-type]
    delivery = build_delivery(LEAD, form, "EVT1")
    assert delivery.body == b"email=ada%40example.com"


LEAD_ID = "01KB0000000000000000000000"


def test_the_plan_is_one_call_to_the_buyer_keyed_by_the_steps_first_event() -> None:
    lead = {**LEAD, "submission.timestamp": 1_764_000_000_000}
    planned = plan_delivery(LEAD_ID, lead, SETTINGS, "premier", 2)
    key = event_id(LEAD_ID, 1_764_000_000_000, 2, 0)
    assert planned == Call(build_delivery(lead, SETTINGS, key), 5000, "Buyer")


def test_a_lead_without_a_submission_time_is_keyed_by_its_ids_time() -> None:
    planned = plan_delivery(LEAD_ID, LEAD, SETTINGS, "premier", 2)
    assert isinstance(planned, Call)
    key = event_id(LEAD_ID, id_timestamp_ms(LEAD_ID), 2, 0)
    assert planned.request.headers["Idempotency-Key"] == key


def test_at_a_full_cap_the_plan_is_no_call_but_the_leads_failure() -> None:
    (check,) = cap_checks(recipient_scope("solar", "premier"), [CapSpec(maximum=3)], 0)
    planned = plan_delivery(LEAD_ID, LEAD, SETTINGS, "premier", 2, CapCount(check, 3, False))
    assert isinstance(planned, StepResult)
    assert (planned.last.type, planned.last.reason) == (
        "recipient.failed",
        "Daily cap reached (3/3)",
    )


def test_accepted_lead_is_delivered_with_revenue_and_buyer_id() -> None:
    result = judge(answer(200, {"outcome": "success", "price": 31.5, "id": "B-9"}))
    event = result.last
    assert event.type == "recipient.delivered"
    assert event.revenue == 31.5
    assert event.appended == {"appended.premier.price": 31.5, "appended.premier.id": "B-9"}
    assert event.vars[TOTAL_REVENUE] == 31.5 and event.vars[TOTAL_DELIVERED] == 1
    assert event.wait_ms == 12
    assert event.request is not None and event.request["headers"]["Idempotency-Key"] == "EVT1"
    assert event.response is not None and event.response["status"] == 200


def test_business_rejection_fails_with_the_buyers_reason() -> None:
    result = judge(answer(200, {"outcome": "failure", "reason": "Duplicate lead"}))
    assert (result.last.type, result.last.outcome, result.last.reason) == (
        "recipient.failed",
        "failure",
        "Duplicate lead",
    )


def test_rejection_without_reason_gets_a_default() -> None:
    assert judge(answer(200, {"outcome": "nope"})).last.reason == "Rejected by buyer"


@pytest.mark.parametrize(
    ("a", "reason"),
    [
        (answer(None, error="Buyer timeout after 5000ms"), "Buyer timeout after 5000ms"),
        (answer(500, {"error": "boom"}), "Buyer answered HTTP 500"),
        (answer(200, None), "Unreadable buyer response: not JSON"),
    ],
)
def test_technical_failures_are_errors(a: Answer, reason: str) -> None:
    result = judge(a)
    assert (result.last.type, result.last.outcome, result.last.reason) == (
        "recipient.error",
        "error",
        reason,
    )


def test_what_a_buyer_says_is_bounded_so_an_event_stays_small() -> None:
    # A buyer's reason, id or header of any length must not push the event over the
    # topic's max message size (and the lead to the dead-letter topic).
    refused = judge(answer(200, {"outcome": "failure", "reason": "x" * 2_000_000}))
    assert len(refused.last.reason or "") == MAX_REASON
    taken = judge(answer(200, {"outcome": "success", "id": "y" * 100_000, "price": 1}))
    assert len(str(taken.last.appended["appended.premier.id"])) == MAX_ID
    loud = Answer(200, {"x-request-id": "z" * 100_000}, b'{"outcome": "success"}', wait_ms=1)
    response = judge(loud).last.response
    assert response is not None and len(response["headers"]["x-request-id"]) == MAX_HEADER


def test_a_redirect_is_an_error_not_followed() -> None:
    result = judge(answer(302, None))
    assert (result.last.type, result.last.reason) == (
        "recipient.error",
        "Buyer answered HTTP 302: a redirect, not followed",
    )


def test_a_buyers_own_limit_and_key_header_travel_with_the_call() -> None:
    limited = SETTINGS.model_copy(update={"max_concurrency": 4, "idempotency_header": "X-Key"})
    planned = plan_delivery("01KB0000000000000000000000", LEAD, limited, "buyer", 2)
    assert isinstance(planned, Call)
    assert planned.max_concurrency == 4
    assert planned.destination == "http://127.0.0.1:8765"
    assert "X-Key" in planned.request.headers
    assert "Idempotency-Key" not in planned.request.headers


def test_a_header_name_that_is_not_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="idempotency_header"):
        RecipientSettings(url="http://b.test/", idempotency_header="Bad Header:")  # type: ignore[arg-type]


def test_a_recipient_error_records_the_timeout_and_whether_it_ran_out() -> None:
    timed_out = Answer(None, {}, b"", "Buyer timeout after 5000ms", 5000, 1, 5001, timed_out=True)
    error = judge(timed_out).last
    assert (error.type, error.timeout_ms, error.timed_out) == (
        "recipient.error",
        SETTINGS.timeout_ms,
        True,
    )
    assert judge(answer(None, error="Buyer connection refused")).last.timed_out is False
    assert judge(answer(200, {"outcome": "success"})).last.timeout_ms is None
