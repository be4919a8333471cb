"""The export routes, export jobs and ``leadflow export`` take the filters ``GET /events``
takes and refuse the same values with the same 422 (``projectors.selection``), and
what ``sort``, ``after_id``, ``before_id`` and ``limit`` mean for an export."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from engine import cli
from engine.api.app import create_app
from engine.settings import Settings
from tests.keys import admin_client
from tests.projectors.exports.conftest import Event

pytestmark = pytest.mark.stack

BAD_VALUES: list[tuple[str, Any]] = [
    ("outcome", "bogus"),
    ("outcome", "Success"),
    ("type", "delivered"),
    ("type", "Source.accepted"),
    ("lead_id", ""),
    ("step_id", "s" * 65),
    ("after_id", ""),
    ("before_id", "e" * 65),
    ("sort", "up"),
    ("limit", "0"),
    ("limit", "-1"),
    ("limit", "ten"),
    # Numbers are not times: pydantic alone would read them as seconds since the epoch.
    ("start", "-1"),
    ("start", "0.5"),
    ("end", "1700000000"),
    ("start", "yesterday"),
    ("end", "2025-13-01"),
]

RANGES = [
    {"start": "2025-11-24T16:00:00Z", "end": "2025-11-24T16:00:00Z"},  # start == end
    {"start": "2025-11-24T17:00:00+01:00", "end": "2025-11-24T15:59:59Z"},  # start > end
]


@pytest.fixture
def client(export_settings: Settings) -> TestClient:
    return admin_client(create_app(export_settings))


def errors(answer: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(loc without its place, msg) of each error of a 422."""
    assert answer.status_code == 422, answer.text
    return [(tuple(e["loc"][1:]), e["msg"]) for e in answer.json()["detail"]]


def routes(flow_id: str) -> list[str]:
    return [
        "/events",
        f"/flows/{flow_id}/events",
        "/events/export",
        f"/flows/{flow_id}/events/export",
    ]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v}" for n, v in BAD_VALUES])
def test_every_events_route_and_export_job_refuses_a_bad_value_alike(
    client: TestClient, pg_schema: str, name: str, value: str
) -> None:
    answers = [errors(client.get(url, params={name: value})) for url in routes(pg_schema)]
    assert answers[0] and all(a == answers[0] for a in answers), answers
    assert answers[0][0][0][0] == name
    body_value: Any = [value] if name == "type" else value
    if name == "limit" and value.lstrip("-").isdigit():
        body_value = int(value)
    assert errors(client.post("/exports", json={name: body_value})) == answers[0]


@pytest.mark.parametrize("params", RANGES, ids=["start == end", "start > end"])
def test_an_empty_or_reversed_range_is_the_same_422_everywhere_and_says_why(
    client: TestClient, pg_schema: str, params: dict[str, str]
) -> None:
    answers = [errors(client.get(url, params=params)) for url in routes(pg_schema)]
    answers.append(errors(client.post("/exports", json=params)))
    ((loc, msg),) = answers[0]
    assert loc == ("end",)
    assert msg.startswith("end (") and "start == end would select nothing" in msg
    assert all(a == answers[0] for a in answers), answers


def test_numbers_are_refused_as_times_in_a_job_body_too(client: TestClient) -> None:
    for value in (-1, 0.5, 1_700_000_000):
        ((loc, msg),) = errors(client.post("/exports", json={"start": value}))
        assert loc == ("start",) and msg.startswith("Input should be an ISO 8601 date or time")


def test_a_cursor_naming_no_stored_event_is_the_same_422_everywhere(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    for name in ("after_id", "before_id"):
        params = {name: "01NOSUCHEVENT"}
        answers = [errors(client.get(url, params=params)) for url in routes(pg_schema)]
        answers.append(errors(client.post("/exports", json=params)))
        assert answers[0] == [
            ((name,), "Unknown event id '01NOSUCHEVENT': a cursor must be a stored event's id")
        ]
        assert all(a == answers[0] for a in answers), answers


def exported(client: TestClient, flow_id: str, **params: Any) -> list[str]:
    answer = client.get(f"/flows/{flow_id}/events/export", params={"format": "jsonl", **params})
    assert answer.status_code == 200, answer.text
    return [orjson.loads(line)["id"] for line in answer.text.splitlines()]


def test_an_export_is_in_event_id_order_bounded_by_cursors_and_limit(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    ids = [e["id"] for e in flow_events]  # id order
    assert exported(client, pg_schema) == ids
    assert exported(client, pg_schema, sort="desc") == ids[::-1]
    assert exported(client, pg_schema, after_id=ids[4]) == ids[5:]
    assert exported(client, pg_schema, before_id=ids[4]) == ids[:4]
    assert exported(client, pg_schema, after_id=ids[2], before_id=ids[9], limit=3) == ids[3:6]
    assert exported(client, pg_schema, sort="desc", after_id=ids[2], limit=2) == ids[-2:][::-1]
    # An export's limit is a row count, not a page size: past /events' 1000 is fine.
    assert exported(client, pg_schema, limit=5000) == ids
    assert client.get("/events", params={"limit": 5000}).status_code == 422


def test_a_job_takes_the_same_order_and_bounds(
    client: TestClient, flow_events: list[Event], pg_schema: str
) -> None:
    ids = [e["id"] for e in flow_events]
    body = {"flow_id": pg_schema, "after_id": ids[0], "sort": "desc", "limit": 2}
    answer = client.post("/exports", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["filters"] == body


def test_the_cli_refuses_a_bad_outcome_saying_so(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: pg_settings)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli.app, ["export", "--outcome", "bogus"])
    assert result.exit_code == 2
    assert "outcome: Input should be 'success', 'failure' or 'error'" in result.stderr


@pytest.mark.parametrize("value", ["-1", "0.5", "1700000000", "20000"])
def test_the_daily_analytics_days_are_iso_8601_only_too(
    client: TestClient, pg_schema: str, value: str
) -> None:
    answer = client.get(f"/flows/{pg_schema}/analytics/daily", params={"start": value})
    ((loc, msg),) = errors(answer)
    assert loc == ("start",) and msg.startswith("Input should be an ISO 8601 date or time")
