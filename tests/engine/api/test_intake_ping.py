"""Ping/post: a price for a lead's non-PII fields, ping limits, and a post that gets the price."""

from __future__ import annotations

import httpx
import pytest

from engine.demo.buyer import bid
from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, AppliedFlow
from tests.kafka_helpers import read_events, wait_for_completion

pytestmark = pytest.mark.stack

AUTH = {"X-API-Key": API_KEY}
PING = {"fields": ["state", "postal_code"], "limits": [{"maximum": 2, "duration": "hour"}]}


def test_a_ping_gets_a_price_and_the_post_that_follows_it_gets_that_price(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(ping=PING)
    url = f"{api_url}/flows/{flow.id}/sources/source"
    lead = {**GOOD_LEAD, "postal_code": "78701"}
    pinged = httpx.post(f"{url}/ping", json=lead, headers=AUTH, timeout=30)
    assert pinged.status_code == 200
    expected = bid({"state": "CA", "postal_code": "78701"}).body["price"]
    assert pinged.json()["price"] == expected
    ping_id = pinged.json()["ping"]["id"]

    posted = httpx.post(
        url,
        params={"ping_id": ping_id},
        json=lead,
        headers={**AUTH, "Idempotency-Key": "post-1"},
        timeout=30,
    )
    assert posted.status_code == 201
    assert posted.json()["price"] == expected
    wait_for_completion(api_settings, flow, 1)
    events = read_events(api_settings, flow)
    accepted = next(e for e in events if e["type"] == "source.accepted")
    assert accepted["cost"] == expected
    assert accepted["vars"]["ping.id"] == ping_id
    # The limits were evaluated on its ping, which they admitted.
    assert accepted["ping_limit_reached"] is False
    assert accepted["source_ping_limits"][0]["maximum"] == 2
    ping_event = next(e for e in events if e["type"] == "source.pinged")
    assert {k for k in ping_event["vars"] if k.startswith("lead.")} == {
        "lead.state",
        "lead.postal_code",
    }


def test_over_the_ping_limit_the_answer_is_429_with_retry_after(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(workers=False, ping=PING)
    url = f"{api_url}/flows/{flow.id}/sources/source/ping"
    first = httpx.post(url, json=GOOD_LEAD, headers=AUTH, timeout=30)
    no_bid = httpx.post(url, json={**GOOD_LEAD, "state": "WY"}, headers=AUTH, timeout=30)
    over = httpx.post(url, json=GOOD_LEAD, headers=AUTH, timeout=30)
    assert first.status_code == no_bid.status_code == 200
    assert (no_bid.json()["outcome"], no_bid.json()["reason"]) == ("failure", "No bid")
    assert over.status_code == 429
    assert over.json()["ping_limit_reached"] is True
    assert over.json()["retry_after"] >= 1
    assert over.headers["Retry-After"] == str(over.json()["retry_after"])
    assert over.json()["reason"] == "Ping limit reached: Hourly cap (2/2)"
    pings = [e for e in read_events(api_settings, flow) if e["type"] == "source.pinged"]
    assert sorted(str(e["ping_limit_reached"]) for e in pings) == ["False", "False", "True"]
    # Each ping's event names the limit it was judged by, its counter, and whether it stopped it.
    counter = f"ping:source/{flow.id}/source:hour@UTC"
    judged = sorted(
        (e["source_ping_limits"][0]["id"], e["source_ping_limits"][0]["reached"]) for e in pings
    )
    assert judged == [(counter, False), (counter, False), (counter, True)]
    assert {e["module_id"] for e in pings} == {"engine.steps.source"}


def test_a_post_naming_an_unknown_ping_is_refused(api_url: str, applied_flow: AppliedFlow) -> None:
    flow = applied_flow(workers=False, ping=PING)
    answer = httpx.post(
        f"{api_url}/flows/{flow.id}/sources/source",
        params={"ping_id": "NOPE"},
        json=GOOD_LEAD,
        headers={**AUTH, "Idempotency-Key": "p-2"},
        timeout=30,
    )
    assert answer.status_code == 409
    assert answer.json()["reason"] == "Unknown ping: NOPE"
