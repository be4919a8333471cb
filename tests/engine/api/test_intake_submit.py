"""POST /flows/{flow}/sources/{source}: a source gets the flow's real verdict in the answer."""

from __future__ import annotations

import httpx
import pytest

from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, AppliedFlow
from tests.kafka_helpers import events_by_lead, read_events, wait_for_completion

pytestmark = pytest.mark.stack

AUTH = {"X-API-Key": API_KEY}


def submit(api_url: str, flow_id: str, lead: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{api_url}/flows/{flow_id}/sources/source",
        json=lead,
        headers={**AUTH, **headers},
        timeout=30,
    )


def test_an_accepted_lead_is_answered_201_with_its_id_and_price(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow()
    answer = submit(api_url, flow.id, GOOD_LEAD)
    assert answer.status_code == 201
    body = answer.json()
    assert body == {
        "outcome": "success",
        "reason": None,
        "lead": {"id": body["lead"]["id"]},
        "price": 2.5,
    }


def test_a_lead_the_source_rejects_is_answered_with_the_reason(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow()
    answer = submit(api_url, flow.id, {**GOOD_LEAD, "email": ""})
    assert answer.status_code == 201
    assert answer.json()["outcome"] == "failure"
    assert answer.json()["reason"] == "Missing required field: email"
    assert answer.json()["price"] == 0.0


def test_waiting_for_completion_answers_a_delivery_or_a_filter_rejection(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(wait_for="completion", timeout_ms=30_000)
    delivered = submit(api_url, flow.id, GOOD_LEAD)
    filtered = submit(api_url, flow.id, {**GOOD_LEAD, "email": "w@example.com", "state": "WY"})
    assert delivered.status_code == filtered.status_code == 201
    assert delivered.json()["outcome"] == "success"
    assert filtered.json()["outcome"] == "failure"
    assert filtered.json()["reason"].startswith("Service area")


def test_form_and_xml_bodies_are_leads_too(api_url: str, applied_flow: AppliedFlow) -> None:
    flow = applied_flow()
    url = f"{api_url}/flows/{flow.id}/sources/source"
    form = httpx.post(url, data=GOOD_LEAD, headers=AUTH, timeout=30)
    xml = "<lead>" + "".join(f"<{k}>{v}</{k}>" for k, v in GOOD_LEAD.items()) + "</lead>"
    as_xml = httpx.post(
        url, content=xml, headers={**AUTH, "Content-Type": "application/xml"}, timeout=30
    )
    assert form.status_code == as_xml.status_code == 201
    assert form.json()["outcome"] == as_xml.json()["outcome"] == "success"


def test_basic_auth_with_the_key_as_password_is_accepted(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow()
    answer = httpx.post(
        f"{api_url}/flows/{flow.id}/sources/source",
        json=GOOD_LEAD,
        auth=("X", API_KEY),
        timeout=30,
    )
    assert answer.status_code == 201


def test_source_submitted_records_the_request_and_the_answer_with_secrets_masked(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(mask=["phone_1"])
    answer = submit(api_url, flow.id, GOOD_LEAD)
    lead_id = answer.json()["lead"]["id"]
    wait_for_completion(api_settings, flow, 1)
    submitted = next(
        e
        for e in events_by_lead(read_events(api_settings, flow))[lead_id]
        if e["type"] == "source.submitted"
    )
    request, response = submitted["request"], submitted["response"]
    assert request["method"] == "POST"
    assert request["uri"] == f"/flows/{flow.id}/sources/source"
    assert request["headers"]["x-api-key"] == "[masked]"
    assert API_KEY not in str(submitted)
    assert "5125550123" not in str(submitted)
    assert response["status"] == 201
    assert response["body"] is not None
    assert httpx.Response(201, content=response["body"]).json() == answer.json()


def test_a_retried_post_with_the_same_idempotency_key_is_one_lead(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow()
    first = submit(api_url, flow.id, GOOD_LEAD, **{"Idempotency-Key": "order-17"})
    again = submit(api_url, flow.id, GOOD_LEAD, **{"Idempotency-Key": "order-17"})
    other = submit(api_url, flow.id, GOOD_LEAD, **{"X-Request-Id": "req-18"})
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.json()["lead"]["id"] != first.json()["lead"]["id"]
    wait_for_completion(api_settings, flow, 2)
    leads = events_by_lead(read_events(api_settings, flow))
    assert set(leads) == {first.json()["lead"]["id"], other.json()["lead"]["id"]}
    assert [e["type"] for e in leads[first.json()["lead"]["id"]]].count("flow.completed") == 1


def test_an_idempotency_key_reused_with_another_body_is_refused(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow()
    submit(api_url, flow.id, GOOD_LEAD, **{"Idempotency-Key": "k-1"})
    reused = submit(api_url, flow.id, {**GOOD_LEAD, "state": "TX"}, **{"Idempotency-Key": "k-1"})
    assert reused.status_code == 422
    assert reused.json()["error"] == "idempotency_key_reused"


def test_a_verdict_that_does_not_come_in_time_is_a_202_and_the_lead_is_processed_once(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(workers=False, timeout_ms=300)
    pending = submit(api_url, flow.id, GOOD_LEAD, **{"Idempotency-Key": "slow-1"})
    assert pending.status_code == 202
    lead_id = pending.json()["lead"]["id"]
    assert pending.json()["status_url"] == f"/leads/{lead_id}/events"
    assert pending.headers["Location"] == f"/leads/{lead_id}/events"

    from tests.engine.api.conftest import start_workers

    stop = start_workers(api_settings, flow)
    try:
        wait_for_completion(api_settings, flow, 1)
        leads = events_by_lead(read_events(api_settings, flow))
        assert list(leads) == [lead_id]
        assert [e["type"] for e in leads[lead_id]].count("flow.completed") == 1
        # The retry gets the verdict the timed-out request kept listening for.
        for _ in range(50):
            retried = submit(api_url, flow.id, GOOD_LEAD, **{"Idempotency-Key": "slow-1"})
            if retried.status_code == 201:
                break
        assert retried.status_code == 201
        assert retried.json()["lead"]["id"] == lead_id
        assert retried.json()["outcome"] == "success"
    finally:
        stop.set()
