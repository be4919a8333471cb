"""Intake and the app-wide check on text Postgres cannot hold (``engine.web.validation``):
inside a lead's body such text is the lead's data, which the source step decides on, so it
never makes the route a 422 (nor a 500); in the path or the query string it is a 422."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import pytest

from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, AppliedFlow
from tests.kafka_helpers import events_by_lead, read_events, wait_for_completion

pytestmark = pytest.mark.stack

AUTH = {"X-API-Key": API_KEY}


def _xml(lead: dict[str, str]) -> bytes:
    return ("<lead>" + "".join(f"<{k}>{v}</{k}>" for k, v in lead.items()) + "</lead>").encode()


# json.dumps writes both as \u escapes; a form body percent-encodes; XML cannot hold NUL
# at all, not even as a character reference, so that lead is unreadable (a 400).
NUL_LEAD = {**GOOD_LEAD, "first_name": "A\x00da", "last_name": "L\ud800"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps(NUL_LEAD).encode(), "application/json"),
        (
            urlencode({**GOOD_LEAD, "first_name": "A\x00da"}).encode(),
            "application/x-www-form-urlencoded",
        ),
        (_xml({**GOOD_LEAD, "first_name": "A&#0;da"}), "application/xml"),
    ],
    ids=["json", "form", "xml"],
)
def test_unstorable_text_in_a_lead_body_is_the_leads_data_not_a_refused_request(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow, body: bytes, content_type: str
) -> None:
    flow = applied_flow()
    answer = httpx.post(
        f"{api_url}/flows/{flow.id}/sources/source",
        content=body,
        headers={**AUTH, "Content-Type": content_type},
        timeout=30,
    )
    assert answer.status_code in (201, 400), answer.text
    lead_id = answer.json()["lead"]["id"]
    wait_for_completion(api_settings, flow, 1)
    types = [e["type"] for e in events_by_lead(read_events(api_settings, flow))[lead_id]]
    assert types[0] == "source.submitted" and types[-1] == "flow.completed"


def test_unstorable_text_in_the_path_or_query_of_intake_is_a_422_naming_it(
    api_url: str, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(workers=False)
    url = f"{api_url}/flows/{flow.id}/sources/source"
    in_path = httpx.post(f"{url}%00", json=GOOD_LEAD, headers=AUTH, timeout=30)
    in_query = httpx.post(url, params={"ping_id": "a\x00b"}, json=GOOD_LEAD, headers=AUTH)
    for answer, loc in ((in_path, ["path", "source_id"]), (in_query, ["query", "ping_id"])):
        assert answer.status_code == 422, answer.text
        assert [e["loc"] for e in answer.json()["detail"]] == [loc]
