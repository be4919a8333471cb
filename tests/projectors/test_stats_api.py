"""Stats and analytics over HTTP: JSON or CSV, and every bad or unknown parameter a 422."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.api.app import create_app
from engine.settings import Settings
from projectors import stats
from projectors.api import router as events_router
from projectors.stats_api import router as stats_router
from projectors.store import Connection
from tests.keys import admin_client
from tests.projectors.test_analytics import Story, store_stories

pytestmark = pytest.mark.stack


@pytest.fixture
def told(db: Connection, pg_schema: str) -> dict[str, Story]:
    return store_stories(db, pg_schema)


@pytest.fixture
def client(pg_settings: Settings) -> TestClient:
    app = FastAPI()
    app.state.settings = pg_settings
    app.include_router(stats_router)
    app.include_router(events_router)
    return admin_client(app)


def error_of(answer: httpx.Response) -> dict[str, Any]:
    """The one validation error of a 422 answer."""
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    return dict(error)


def test_stats_answer_a_bare_json_array_of_rows(
    client: TestClient, told: dict[str, Story], pg_schema: str
) -> None:
    params = {"flow_id": pg_schema, "group_by": "outcome", "interval": "day"}
    answer = client.get("/events/stats", params=params)
    assert answer.status_code == 200
    assert answer.json() == [
        {"bucket": "2025-11-24T00:00:00.000Z", "outcome": "error", "count": 1},
        {"bucket": "2025-11-24T00:00:00.000Z", "outcome": "failure", "count": 8},
        {"bucket": "2025-11-24T00:00:00.000Z", "outcome": "success", "count": 25},
        {"bucket": "2025-11-25T00:00:00.000Z", "outcome": "failure", "count": 2},
        {"bucket": "2025-11-25T00:00:00.000Z", "outcome": "success", "count": 1},
    ]


def test_group_by_repeats_or_takes_a_comma_separated_list(
    client: TestClient, told: dict[str, Story], pg_schema: str
) -> None:
    repeated = client.get(
        "/events/stats", params=[("group_by", "type"), ("group_by", "step"), ("flow_id", pg_schema)]
    )
    listed = client.get("/events/stats", params={"group_by": "type, step", "flow_id": pg_schema})
    assert repeated.status_code == listed.status_code == 200
    assert repeated.json() == listed.json()
    assert list(listed.json()[0]) == ["type", "step", "count"]


def test_csv_on_request_by_format_or_accept_header(
    client: TestClient, told: dict[str, Story], pg_schema: str
) -> None:
    params = {"flow_id": pg_schema, "group_by": "source"}
    by_format = client.get("/events/stats", params={**params, "format": "csv"})
    by_header = client.get("/events/stats", params=params, headers={"Accept": "text/csv"})
    assert by_format.headers["content-type"] == "text/csv; charset=utf-8"
    assert by_format.text == by_header.text
    assert list(csv.reader(io.StringIO(by_format.text))) == [
        ["source", "count"],
        ["partner", "16"],
        ["web", "21"],
    ]
    explicit_json = client.get(
        "/events/stats", params={**params, "format": "json"}, headers={"Accept": "text/csv"}
    )
    assert explicit_json.json() == [
        {"source": "partner", "count": 16},
        {"source": "web", "count": 21},
    ]


def test_an_empty_csv_answer_still_names_its_columns(
    client: TestClient, db: Connection, pg_schema: str
) -> None:
    answer = client.get(f"/flows/{pg_schema}/analytics/recipients", params={"format": "csv"})
    assert answer.status_code == 200
    assert answer.text.splitlines() == [
        "step_id,step_name,leads,accepted,acceptance_rate,failed,errors,"
        "response_ms_p50,response_ms_p95,returned,revenue"
    ]


@pytest.mark.parametrize(
    ("params", "name", "message"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "Unknown time zone 'Mars/Olympus_Mons'"),
        ({"timezone": "localtime"}, "timezone", "Unknown time zone 'localtime'"),
        ({"group_by": "type,colour"}, "group_by", "Unknown group_by 'colour'; use any of: type,"),
        ({"interval": "fortnight"}, "interval", "Input should be 'hour', 'day', 'week' or"),
        ({"format": "xml"}, "format", "Input should be 'json' or 'csv'"),
        ({"type": "delivered"}, "type", "String should match pattern"),
        (
            {"start": "2025-11-25", "end": "2025-11-24"},
            "end",
            "end (2025-11-24T00:00:00+00:00) must be after start",
        ),
        ({"groupby": "type"}, "groupby", "Unknown query parameter 'groupby'; this route takes:"),
        ({"flow_id": ["a", "b"]}, "flow_id", "'flow_id' takes one value, got 2"),
    ],
)
def test_bad_stats_parameters_are_a_422_that_names_the_parameter_and_the_problem(
    client: TestClient, params: dict[str, Any], name: str, message: str
) -> None:
    error = error_of(client.get("/events/stats", params=params))
    assert error["loc"][:2] == ["query", name]
    assert error["msg"].startswith(message)


def test_a_stats_answer_over_the_row_limit_is_a_422_that_says_how_to_narrow_it(
    client: TestClient, told: dict[str, Story], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "MAX_STATS_ROWS", 2)
    answer = client.get("/events/stats", params={"flow_id": pg_schema, "group_by": "type"})
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]  # FastAPI's 422 shape, as the OpenAPI declares
    assert error["loc"] == ["query"] and "narrow start/end" in error["msg"]


# -- /flows/{flow_id}/analytics/* ------------------------------------------------------------


def test_each_analytics_route_answers_its_table(
    client: TestClient, told: dict[str, Story], pg_schema: str
) -> None:
    base = f"/flows/{pg_schema}/analytics"
    steps = client.get(f"{base}/steps").json()
    assert [s["step_id"] for s in steps] == ["source", "service-area", "premier", "summit"]
    reasons = client.get(f"{base}/reasons", params={"step_id": "summit"}).json()
    assert reasons == [
        {
            "reason": "Rejected by buyer",
            "step_id": "summit",
            "type": "recipient.failed",
            "count": 1,
            "share": 1.0,
        }
    ]
    sources = client.get(f"{base}/sources", params={"end": "2025-11-24T16:01:00"}).json()
    assert [(s["source_id"], s["submitted"], s["profit"]) for s in sources] == [("web", 1, 27.5)]
    recipients = client.get(f"{base}/recipients", headers={"Accept": "text/csv"})
    assert [row[0] for row in csv.reader(io.StringIO(recipients.text))] == [
        "step_id", "premier", "summit",
    ]  # fmt: skip


@pytest.mark.parametrize("table", ["steps", "reasons", "sources", "recipients"])
def test_analytics_routes_refuse_unknown_parameters_and_bad_times(
    client: TestClient, pg_schema: str, table: str
) -> None:
    url = f"/flows/{pg_schema}/analytics/{table}"
    assert error_of(client.get(url, params={"from": "2025-11-24"}))["loc"] == ["query", "from"]
    assert error_of(client.get(url, params={"start": "noon"}))["loc"] == ["query", "start"]


def test_reasons_limit_is_between_1_and_1000(client: TestClient, pg_schema: str) -> None:
    url = f"/flows/{pg_schema}/analytics/reasons"
    for bad in ("0", "1001"):
        assert error_of(client.get(url, params={"limit": bad}))["loc"] == ["query", "limit"]


def test_in_the_served_app_events_stats_is_not_taken_for_an_event_id(
    pg_settings: Settings, told: dict[str, Story], pg_schema: str
) -> None:
    app = admin_client(create_app(pg_settings))
    answer = app.get("/events/stats", params={"flow_id": pg_schema})
    assert answer.status_code == 200
    assert answer.json() == [{"count": sum(len(s.events) for s in told.values())}]
    event_id = told["sold"].events[0]["id"]
    assert app.get(f"/events/{event_id}").json()["id"] == event_id
