"""Limits: body size (413), page size and time range (422), per-key rate (429 with
Retry-After), failed authentications per address, concurrent export jobs per key, and
stats CSV cells a spreadsheet would run."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from engine.access.scopes import Principal
from engine.access.store import create_key
from engine.api.app import create_app
from engine.settings import Settings
from projectors.stats import Table
from projectors.stats_api import respond
from tests.keys import admin_client
from tests.security.conftest import Seeded

# -- no service needed --------------------------------------------------------------------

UNIT_APP = create_app(Settings(export_worker_in_api=False, max_body_bytes=4096))


@pytest.mark.parametrize("path", ["/exports", "/feedback?event_id=x", "/ui/api/leads/search"])
def test_a_body_over_the_limit_is_a_413_before_anything_reads_it(path: str) -> None:
    answer = admin_client(UNIT_APP).post(
        path, content=b'{"q": "' + b"x" * 5000 + b'"}', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json() == {"error": "body_too_large", "reason": "Body over 4096 bytes"}


def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"q": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    answer = admin_client(UNIT_APP).post("/ui/api/leads/search", content=chunks())
    assert answer.status_code == 413


def test_stats_csv_cells_that_would_start_a_formula_are_neutralised() -> None:
    table = Table(
        ("reason", "count", "profit"),
        [
            {"reason": '=HYPERLINK("http://evil.example","x")', "count": 3, "profit": -2.5},
            {"reason": "+1 lead", "count": 1, "profit": 0},
            {"reason": "@SUM(A1)", "count": 1, "profit": 0},
            {"reason": "-cmd", "count": 1, "profit": 0},
            {"reason": "Duplicate", "count": 1, "profit": 0},
        ],
    )
    request = Request({"type": "http", "headers": [], "method": "GET", "path": "/"})
    reader = Principal("k", "k", frozenset({"stats", "pii:read"}))
    answer = respond(table, request, "csv", reader)
    rows = list(csv.DictReader(io.StringIO(bytes(answer.body).decode())))
    assert [r["reason"] for r in rows] == [
        '\'=HYPERLINK("http://evil.example","x")',
        "'+1 lead",
        "'@SUM(A1)",
        "'-cmd",
        "Duplicate",
    ]
    assert rows[0]["profit"] == "-2.5"  # a number keeps its sign


# -- on the seeded stack --------------------------------------------------------------------


@pytest.mark.stack
def test_page_size_and_time_range_limits_are_422s_naming_the_parameter(seeded: Seeded) -> None:
    client = seeded.client("reader")
    too_big = client.get("/events", params={"limit": 5000})
    assert too_big.status_code == 422 and too_big.json()["detail"][0]["loc"] == ["query", "limit"]
    years = client.get("/events", params={"start": "2020-01-01", "end": "2026-01-01"})
    assert years.status_code == 422
    (error,) = years.json()["detail"]
    assert error["loc"] == ["query", "end"] and "max_query_days" in error["msg"]
    daily = client.get(
        f"/flows/{seeded.flow_a}/analytics/daily",
        params={"start": "2020-01-01", "end": "2026-01-01"},
    )
    assert daily.status_code == 422


@pytest.mark.stack
def test_a_key_over_its_rate_gets_429_with_retry_after(seeded: Seeded) -> None:
    _, key = create_key(seeded.settings, "slow", ["events:read"], rate_per_minute=2)
    client = TestClient(create_app(seeded.settings), headers={"X-API-Key": key})
    path = f"/events/{seeded.delivery_a}"
    assert [client.get(path).status_code for _ in range(2)] == [200, 200]
    limited = client.get(path)
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    # Another key is not held back by this one's rate.
    assert admin_client(create_app(seeded.settings)).get(path).status_code == 200


@pytest.mark.stack
def test_failed_authentications_are_limited_per_address_and_logged_without_the_key(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(seeded.settings.model_copy(update={"auth_failures_per_minute": 3}))
    wrong = "lf_0123456789ab_" + "W" * 43
    client = TestClient(app, headers={"Authorization": f"Bearer {wrong}"})
    assert [client.get("/events").status_code for _ in range(3)] == [401, 401, 401]
    blocked = client.get("/events")
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    # Even a good key from that address waits: the address is what is limited.
    good = TestClient(app, headers={"Authorization": f"Bearer {seeded.keys['reader']}"})
    assert good.get("/events").status_code == 429
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "access refused" in text and wrong not in text and "W" * 43 not in text


@pytest.mark.stack
def test_a_key_has_at_most_max_export_jobs_per_key_waiting(seeded: Seeded) -> None:
    _, key = create_key(seeded.settings, "exporter", ["exports"])
    app = create_app(seeded.settings.model_copy(update={"max_export_jobs_per_key": 2}))
    client = TestClient(app, headers={"X-API-Key": key})
    made = [client.post("/exports", json={"flow_id": seeded.flow_a}) for _ in range(3)]
    assert [a.status_code for a in made] == [201, 201, 429]
    assert made[2].json()["error"] == "too_many_exports" and "retry-after" in made[2].headers
    # Another key's jobs do not count: the tests' own key can still export.
    assert admin_client(app).post("/exports", json={"flow_id": seeded.flow_a}).status_code == 201
