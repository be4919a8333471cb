"""Bad requests get a clear 4xx JSON answer; an authenticated but unreadable lead is still
recorded as source.rejected, so the source can see why."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, KEY_ENV, AppliedFlow
from tests.kafka_helpers import events_by_lead, read_events, wait_for_completion

pytestmark = pytest.mark.stack

AUTH = {"X-API-Key": API_KEY}


def post(url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(url, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_unknown_flow_and_unknown_source_are_404(api_url: str, applied_flow: AppliedFlow) -> None:
    flow = applied_flow(workers=False)
    no_flow = post(f"{api_url}/flows/nope-{flow.id}/sources/source", json=GOOD_LEAD, headers=AUTH)
    no_source = post(f"{api_url}/flows/{flow.id}/sources/other", json=GOOD_LEAD, headers=AUTH)
    assert (no_flow.status_code, no_flow.json()["error"]) == (404, "unknown_flow")
    assert (no_source.status_code, no_source.json()["error"]) == (404, "unknown_source")


def test_missing_or_wrong_credentials_are_401_and_never_echo_the_key(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(workers=False)
    url = f"{api_url}/flows/{flow.id}/sources/source"
    missing = post(url, json=GOOD_LEAD)
    wrong = post(url, json=GOOD_LEAD, headers={"X-API-Key": "guess"})
    wrong_basic = post(url, json=GOOD_LEAD, auth=("X", "guess"))
    for answer in (missing, wrong, wrong_basic):
        assert answer.status_code == 401
        assert answer.json() == {
            "outcome": "error",
            "reason": "Missing or invalid API key",
            "error": "unauthorized",
        }
    assert missing.headers["WWW-Authenticate"].startswith("Basic")


def test_a_key_stored_as_its_sha256_is_checked_against_the_hash(
    api_url: str, applied_flow: AppliedFlow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest())
    flow = applied_flow()
    answer = post(f"{api_url}/flows/{flow.id}/sources/source", json=GOOD_LEAD, headers=AUTH)
    assert answer.status_code == 201


def test_a_body_over_the_limit_is_413(api_url: str, applied_flow: AppliedFlow) -> None:
    flow = applied_flow(workers=False, max_body_bytes=1024)
    answer = post(
        f"{api_url}/flows/{flow.id}/sources/source",
        json={**GOOD_LEAD, "notes": "x" * 2000},
        headers=AUTH,
    )
    assert (answer.status_code, answer.json()["error"]) == (413, "body_too_large")


def test_a_content_type_the_source_does_not_take_is_415(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(workers=False, formats=["json"])
    url = f"{api_url}/flows/{flow.id}/sources/source"
    form = post(url, data=GOOD_LEAD, headers=AUTH)
    text = post(url, content=b"hello", headers={**AUTH, "Content-Type": "text/plain"})
    for answer in (form, text):
        assert answer.status_code == 415
        assert answer.json()["error"] == "unsupported_content_type"
        assert "this source takes json" in answer.json()["reason"]


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/json", b'{"email": ', "Invalid JSON"),
        ("application/json", b"[1, 2]", "Invalid lead: expected a JSON object"),
        ("application/xml", b"<lead><email>a@b.c</lead>", "Invalid XML"),
        (
            "application/xml",
            b'<!DOCTYPE l [<!ENTITY a "aaaa">]><lead><email>&a;</email></lead>',
            "Invalid XML: forbidden construct",
        ),
    ],
)
def test_an_unreadable_body_is_400_and_still_a_rejected_lead(
    api_url: str,
    api_settings: Settings,
    applied_flow: AppliedFlow,
    content_type: str,
    body: bytes,
    reason: str,
) -> None:
    flow = applied_flow()
    answer = post(
        f"{api_url}/flows/{flow.id}/sources/source",
        content=body,
        headers={**AUTH, "Content-Type": content_type},
    )
    assert answer.status_code == 400
    assert answer.json()["outcome"] == "failure"
    assert answer.json()["reason"].startswith(reason)
    lead_id = answer.json()["lead"]["id"]
    wait_for_completion(api_settings, flow, 1)
    timeline = events_by_lead(read_events(api_settings, flow))[lead_id]
    types = [e["type"] for e in timeline]
    assert types == ["source.submitted", "source.rejected", "flow.completed"]
    assert timeline[1]["reason"] == answer.json()["reason"]
    assert timeline[0]["response"]["status"] == 400
