"""The events API on a real projection: filters, time ranges, keyset paging, timelines, changes,
and strict query parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.settings import Settings
from projectors.api import router
from projectors.batch import Record, build_batch
from projectors.store import Connection
from projectors.writing import write_batch
from schemas.codec import EventCodec, event_to_json_dict
from tests.factories import make_lead_events
from tests.keys import admin_client
from tests.projectors.test_search import wait_visible

pytestmark = pytest.mark.stack

BASE_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
Events = list[dict[str, Any]]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@pytest.fixture
def leads(db: Connection, pg_schema: str) -> list[Events]:
    """Three delivered leads of flow ``pg_schema``, a second apart (events at +3, +13, +23 ms
    after each submission), and one lead of another flow that must never show up."""
    codec = EventCodec()
    timelines = [
        make_lead_events(flow_id=pg_schema, submitted_ms=BASE_MS + 1000 * i) for i in range(3)
    ]
    other = make_lead_events(flow_id=f"other{pg_schema}", submitted_ms=BASE_MS + 500)
    every = [e for timeline in timelines for e in timeline] + other
    records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(every)]
    write_batch(db, "test", build_batch(codec, records))
    wait_visible(db)
    return timelines


@pytest.fixture
def client(pg_settings: Settings) -> TestClient:
    app = FastAPI()
    app.state.settings = pg_settings
    app.include_router(router)
    return admin_client(app)


def ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [e["id"] for e in answer.json()]


def all_ids(leads: list[Events]) -> list[str]:
    return sorted(e["id"] for timeline in leads for e in timeline)


# -- GET /flows/{flow_id}/events ----------------------------------------------------------


def test_a_flows_events_come_newest_first_as_a_bare_array_of_stored_json(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    answer = client.get(f"/flows/{pg_schema}/events")
    assert ids(answer) == all_ids(leads)[::-1]
    assert answer.json()[-1] == event_to_json_dict(leads[0][0])
    assert ids(client.get(f"/flows/{pg_schema}/events", params={"sort": "asc"})) == all_ids(leads)


def test_filters_by_lead_type_and_outcome(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    url = f"/flows/{pg_schema}/events"
    lead = leads[1]
    assert ids(client.get(url, params={"lead_id": lead[0]["lead_id"], "sort": "asc"})) == [
        e["id"] for e in lead
    ]
    both = client.get(url, params={"type": ["filter.passed", "flow.completed"]})
    assert sorted(ids(both)) == sorted(
        e["id"] for t in leads for e in t if e["type"] in ("filter.passed", "flow.completed")
    )
    assert {e["type"] for e in both.json()} == {"filter.passed", "flow.completed"}
    assert len(ids(client.get(url, params={"outcome": "success"}))) == 15
    assert ids(client.get(url, params={"outcome": "failure"})) == []
    assert ids(client.get("/flows/nosuchflow/events")) == []


def test_start_is_inclusive_and_end_exclusive(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    # Lead 1's filter.passed is at exactly +1013 ms; lead 2's first events at exactly +2003.
    params = {"start": iso(BASE_MS + 1013), "end": iso(BASE_MS + 2003), "sort": "asc"}
    answer = client.get(f"/flows/{pg_schema}/events", params=params)
    assert ids(answer) == [e["id"] for e in leads[1][2:]]
    assert answer.json()[0]["timestamp"].startswith("2025-11-24T16:00:01.013")


def test_a_bare_date_or_a_time_without_offset_is_utc(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    url = f"/flows/{pg_schema}/events"
    assert len(ids(client.get(url, params={"start": "2025-11-24"}))) == 15
    assert ids(client.get(url, params={"start": "2025-11-25"})) == []
    assert len(ids(client.get(url, params={"end": "2025-11-24T16:00:01"}))) == 5


def test_paging_with_after_id_asc_returns_every_event_exactly_once(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    seen: list[str] = []
    after: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"sort": "asc", "limit": 4}
        if after is not None:
            params["after_id"] = after
        page = ids(client.get(f"/flows/{pg_schema}/events", params=params))
        if not page:
            break
        assert len(page) <= 4
        seen += page
        after = page[-1]
    assert seen == all_ids(leads)


def test_paging_back_with_before_id_desc(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    everything = all_ids(leads)
    params = {"before_id": everything[5], "limit": 3}
    assert ids(client.get(f"/flows/{pg_schema}/events", params=params)) == everything[2:5][::-1]


def test_limit_is_between_1_and_1000(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    url = f"/flows/{pg_schema}/events"
    assert len(ids(client.get(url, params={"limit": 1}))) == 1
    assert len(ids(client.get(url, params={"limit": 1000}))) == 15
    for bad in (0, 1001, "many"):
        answer = client.get(url, params={"limit": bad})
        assert answer.status_code == 422
        assert "limit" in answer.text


@pytest.mark.parametrize(
    "params",
    [
        {"start": "yesterday"},
        {"end": "2025-13-01"},
        {"sort": "sideways"},
        {"after_id": ""},
        {"outcome": "maybe"},
        {"type": "delivered"},
        {"lead": "L1"},
    ],
)
def test_bad_parameters_are_a_422_naming_the_parameter(
    client: TestClient, pg_schema: str, params: dict[str, str]
) -> None:
    answer = client.get(f"/flows/{pg_schema}/events", params=params)
    assert answer.status_code == 422
    assert next(iter(params)) in answer.text


def test_an_end_not_after_start_is_a_422(client: TestClient, pg_schema: str) -> None:
    params = {"start": "2025-11-24T12:00:00Z", "end": "2025-11-24T12:00:00Z"}
    answer = client.get(f"/flows/{pg_schema}/events", params=params)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["msg"] == (
        "end (2025-11-24T12:00:00+00:00) must be after start (2025-11-24T12:00:00+00:00):"
        " start is inclusive and end exclusive, so start == end would select nothing"
    )


def test_a_cursor_that_is_no_stored_event_is_a_422_that_says_so(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    answer = client.get(f"/flows/{pg_schema}/events", params={"after_id": "01NOSUCHEVENT"})
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["query", "after_id"]
    assert error["msg"] == "Unknown event id '01NOSUCHEVENT': a cursor must be a stored event's id"


# -- GET /events ----------------------------------------------------------------------------


def test_events_of_every_flow_or_of_one_flow_as_the_flows_own_route_gives_them(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    everything = ids(client.get("/events", params={"sort": "asc", "limit": 1000}))
    assert len(everything) == 20  # the other flow's lead included
    assert set(all_ids(leads)) < set(everything)
    for params in ({}, {"sort": "asc", "limit": 4}, {"type": "flow.completed", "sort": "asc"}):
        one_flow = client.get("/events", params={**params, "flow_id": pg_schema})
        assert ids(one_flow) == ids(client.get(f"/flows/{pg_schema}/events", params=params))


def test_events_filter_by_step_and_answer_times_in_utc(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    answer = client.get("/events", params={"flow_id": pg_schema, "step_id": "premier"})
    assert sorted(ids(answer)) == sorted(
        e["id"] for t in leads for e in t if e["step_id"] == "premier"
    )
    assert all(e["timestamp"].endswith("Z") for e in answer.json())


@pytest.mark.parametrize(
    "url",
    [
        "/events",
        "/flows/f/events",
        "/leads/L/events",
        "/events/E",
        "/leads/L/changes",
    ],
)
def test_every_events_route_refuses_a_query_parameter_it_does_not_take(
    client: TestClient, url: str
) -> None:
    answer = client.get(url, params={"flow": "f"})
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["query", "flow"]
    assert error["msg"].startswith("Unknown query parameter 'flow'; this route takes: ")


def test_a_single_valued_parameter_given_twice_is_a_422_and_type_may_repeat(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    twice = client.get("/events", params=[("limit", "1"), ("limit", "2")])
    assert twice.status_code == 422
    assert twice.json()["detail"][0]["msg"] == "'limit' takes one value, got 2"
    types = [("type", "source.accepted"), ("type", "flow.completed"), ("flow_id", pg_schema)]
    assert len(ids(client.get("/events", params=types))) == 6


# -- GET /leads/{lead_id}/events, GET /events/{event_id} --------------------------------------


def test_a_leads_timeline_is_in_order_and_an_unknown_lead_is_a_404(
    client: TestClient, leads: list[Events]
) -> None:
    lead = leads[2]
    answer = client.get(f"/leads/{lead[0]['lead_id']}/events")
    assert answer.json() == [event_to_json_dict(e) for e in lead]
    missing = client.get("/leads/NOPE/events")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Unknown lead: NOPE"}


def test_one_event_in_full_and_an_unknown_one_is_a_404(
    client: TestClient, leads: list[Events]
) -> None:
    delivered = leads[0][3]
    answer = client.get(f"/events/{delivered['id']}")
    assert answer.status_code == 200
    assert answer.json() == event_to_json_dict(delivered)
    missing = client.get("/events/NOPE")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Unknown event: NOPE"}


# -- GET /leads/{lead_id}/changes -------------------------------------------------------------


def test_changes_between_each_consecutive_pair_show_the_delivery_appending_the_buyer_id(
    client: TestClient, leads: list[Events]
) -> None:
    lead = leads[0]
    answer = client.get(f"/leads/{lead[0]['lead_id']}/changes")
    assert answer.status_code == 200
    pairs = answer.json()
    assert [(p["from"], p["to"]) for p in pairs] == [(a["id"], b["id"]) for a, b in pairwise(lead)]
    assert pairs[0]["from_type"] == "source.submitted"
    assert pairs[0]["added"] == pairs[0]["removed"] == pairs[0]["changed"] == {}
    delivery = pairs[2]
    assert (delivery["from_type"], delivery["to_type"]) == ("filter.passed", "recipient.delivered")
    assert delivery["added"] == {"appended.premier.id": "B-1"}
    assert delivery["appended"] == {"appended.premier.id": "B-1"}
    assert delivery["removed"] == delivery["changed"] == {}


def test_changes_between_two_chosen_events(client: TestClient, leads: list[Events]) -> None:
    lead = leads[1]
    url = f"/leads/{lead[0]['lead_id']}/changes"
    answer = client.get(url, params={"from_event": lead[0]["id"], "to_event": lead[3]["id"]})
    assert answer.status_code == 200
    [pair] = answer.json()
    assert (pair["from"], pair["to"]) == (lead[0]["id"], lead[3]["id"])
    assert pair["added"] == {"appended.premier.id": "B-1"}
    half = client.get(url, params={"from_event": lead[0]["id"]})
    assert half.status_code == 422
    other_leads = client.get(
        url, params={"from_event": lead[0]["id"], "to_event": leads[0][3]["id"]}
    )
    assert other_leads.status_code == 404
    assert leads[0][3]["id"] in other_leads.json()["detail"]
    assert client.get("/leads/NOPE/changes").status_code == 404


# -- field-name aliases (README, "Field names") -------------------------------------------


def test_filters_take_either_name_of_a_field(
    client: TestClient, leads: list[Events], pg_schema: str
) -> None:
    url = f"/flows/{pg_schema}/events"
    wanted = sorted([leads[0][1]["id"], leads[2][3]["id"]])
    for name in ("id", "event_id"):
        assert sorted(ids(client.get(url, params={name: wanted}))) == wanted
    every = len(all_ids(leads))
    for name in ("min_ms", "min_duration_ms"):
        assert len(ids(client.get(url, params={name: 3, "limit": 1000}))) == every
        assert ids(client.get(url, params={name: 4})) == []
    for name in ("reason", "rejection_reason"):
        assert ids(client.get(url, params={name: "Rejected by buyer"})) == []
    both = client.get(url, params={"reason": "a", "rejection_reason": "b"})
    assert both.status_code == 422
    assert "one filter" in both.text
