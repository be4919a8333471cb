"""Hundreds of concurrent submits share one waiter consumer; each answer is its lead's truth."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, AppliedFlow
from tests.kafka_helpers import events_by_lead, read_events, wait_for_completion

pytestmark = pytest.mark.stack

CONCURRENT = 300


def lead_number(i: int) -> dict[str, str]:
    """A mix of verdicts: delivered, refused by the buyer, filtered out, rejected at the source."""
    lead = {**GOOD_LEAD, "email": f"ada{i}@example.com"}
    if i % 5 == 1:
        lead["email"] = f"ada{i}+reject@example.com"
    elif i % 5 == 2:
        lead["state"] = "WY"
    elif i % 5 == 3:
        lead["email"] = ""
    return lead


async def submit_all(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        return await asyncio.gather(
            *(
                client.post(url, json=lead_number(i), headers={"X-API-Key": API_KEY})
                for i in range(CONCURRENT)
            )
        )


def test_every_concurrent_answer_matches_the_events_of_its_lead(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(wait_for="completion", timeout_ms=60_000)
    answers = asyncio.run(submit_all(f"{api_url}/flows/{flow.id}/sources/source"))

    assert [a.status_code for a in answers] == [201] * CONCURRENT
    wait_for_completion(api_settings, flow, CONCURRENT)
    leads = events_by_lead(read_events(api_settings, flow, timeout=30))
    assert len(leads) == CONCURRENT
    for answer in answers:
        body = answer.json()
        timeline = leads[body["lead"]["id"]]
        completed = [e for e in timeline if e["type"] == "flow.completed"]
        assert len(completed) == 1
        assert (body["outcome"], body["reason"], body["price"]) == (
            completed[0]["outcome"],
            completed[0]["reason"],
            completed[0]["cost"],
        )
    outcomes = {a.json()["outcome"] for a in answers}
    assert outcomes == {"success", "failure"}
