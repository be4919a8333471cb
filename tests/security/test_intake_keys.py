"""Intake takes the one key model too: a stored key with ``intake:<source>`` (or
``intake:*``) for a flow it sees, besides the source's own configured key; any other key is
a 401, and an address that keeps failing is answered 429 before any key is looked at."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from engine.access.store import create_key
from engine.api.app import create_app
from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, AppliedFlow

pytestmark = pytest.mark.stack


def post(url: str, key: str) -> httpx.Response:
    return httpx.post(url, json=GOOD_LEAD, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_stored_key_with_the_sources_scope_submits_and_others_are_401(
    api_settings: Settings, api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow()
    url = f"{api_url}/flows/{flow.id}/sources/source"
    _, seller = create_key(api_settings, "seller", ["intake:source"], [flow.id])
    _, any_source = create_key(api_settings, "ops", ["intake:*"])
    _, other_flow = create_key(api_settings, "other", ["intake:source"], ["elsewhere"])
    _, other_source = create_key(api_settings, "web-b", ["intake:webform-b"])
    _, reader = create_key(api_settings, "reader", ["events:read", "pii:read"])
    assert post(url, seller).status_code == 201
    assert post(url, any_source).status_code == 201
    for refused in (other_flow, other_source, reader):
        answer = post(url, refused)
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


def test_an_address_that_keeps_failing_is_answered_429(
    api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(workers=False)
    app = create_app(api_settings.model_copy(update={"auth_failures_per_minute": 2}))
    path = f"/flows/{flow.id}/sources/source"
    with TestClient(app) as client:
        statuses = [
            client.post(path, json=GOOD_LEAD, headers={"X-API-Key": "guess"}).status_code
            for _ in range(3)
        ]
        assert statuses == [401, 401, 429]
        # The source's right key from that address waits too, until the address recovers.
        limited = client.post(path, json=GOOD_LEAD, headers={"X-API-Key": API_KEY})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
