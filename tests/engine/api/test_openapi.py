"""The OpenAPI document states every status a route can answer and in which content types
(``engine.web.responses``): what a client generator, or a fuzzer such as schemathesis
(``tests/engine/api/test_fuzz.py``), holds the API to."""

from __future__ import annotations

from typing import Any

import pytest

from engine.api.app import create_app
from engine.settings import Settings
from tests.keys import admin_client

APP = create_app(Settings(export_worker_in_api=False))
DOC = APP.openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, methods in DOC["paths"].items()
    for method, operation in methods.items()
]

JSON = "application/json"
# (method, path): every status it can answer, and the content types of its 200 (or 201/202).
# The key guard (engine.access.guard): no key or an unknown one, no scope, too many.
GUARD = ("401", "403", "429")
EXPECTED: dict[tuple[str, str], tuple[set[str], dict[str, set[str]]]] = {
    ("GET", "/healthz"): ({"200", "422"}, {"200": {JSON}}),
    ("GET", "/metrics"): ({"200", "422", *GUARD}, {"200": {"text/plain"}}),
    ("POST", "/feedback"): ({"202", "400", "404", "413", "422", "503", *GUARD}, {"202": {JSON}}),
    ("POST", "/flows/{flow_id}/sources/{source_id}"): (
        {"201", "202", "400", "401", "404", "409", "413", "415", "422", "429", "503"},
        {"201": {JSON}, "202": {JSON}},
    ),
    ("POST", "/flows/{flow_id}/sources/{source_id}/ping"): (
        {"200", "400", "401", "404", "413", "415", "422", "429", "503"},
        {"200": {JSON}},
    ),
    ("GET", "/events"): ({"200", "422", "503", *GUARD}, {"200": {JSON}}),
    ("GET", "/events/{event_id}"): ({"200", "404", "422", "503", *GUARD}, {"200": {JSON}}),
    ("GET", "/leads/{lead_id}/events"): ({"200", "404", "422", "503", *GUARD}, {"200": {JSON}}),
    ("GET", "/leads/{lead_id}/changes"): ({"200", "404", "422", "503", *GUARD}, {"200": {JSON}}),
    ("GET", "/events/stats"): ({"200", "422", "503", *GUARD}, {"200": {JSON, "text/csv"}}),
    ("GET", "/flows/{flow_id}/analytics/daily"): (
        {"200", "422", "503", *GUARD},
        {"200": {JSON, "text/csv"}},
    ),
    **{
        ("GET", f"/flows/{{flow_id}}/insights/{name}"): (
            {"200", "422", "503", *GUARD},
            {"200": {JSON, "text/csv"}},
        )
        for name in ("steps", "rejections", "enhancements", "sources", "buyers", "buyer-hours")
    },
    ("GET", "/ui/api/flows/{flow_id}/insights"): ({"200", "422", "503", *GUARD}, {"200": {JSON}}),
    ("GET", "/events/export"): (
        {"200", "422", "503", *GUARD},
        {"200": {"text/csv", "application/x-ndjson"}},
    ),
    ("GET", "/flows/{flow_id}/events/export"): (
        {"200", "422", "503", *GUARD},
        {"200": {"text/csv", "application/x-ndjson"}},
    ),
    ("POST", "/exports"): ({"201", "400", "413", "422", "503", *GUARD}, {"201": {JSON}}),
    ("GET", "/exports/{job_id}"): ({"200", "404", "422", "503", *GUARD}, {"200": {JSON}}),
    ("GET", "/exports/{job_id}/download"): (
        {"200", "404", "409", "410", "422", "502", "503", *GUARD},
        {"200": {"application/gzip"}},
    ),
    ("GET", "/ui/api/whoami"): ({"200", "422", "503", *GUARD}, {"200": {JSON}}),
    ("GET", "/ui/api/leads/{lead_id}"): ({"200", "404", "422", "503", *GUARD}, {"200": {JSON}}),
    ("POST", "/ui/api/leads/search"): (
        {"200", "400", "413", "422", "503", *GUARD},
        {"200": {JSON}},
    ),
}


@pytest.mark.parametrize(("key", "expected"), EXPECTED.items(), ids=[" ".join(k) for k in EXPECTED])
def test_a_route_declares_each_status_it_answers_and_its_content_types(
    key: tuple[str, str], expected: tuple[set[str], dict[str, set[str]]]
) -> None:
    method, path = key
    responses = DOC["paths"][path][method.lower()]["responses"]
    statuses, content_types = expected
    assert set(responses) == statuses
    for status, types in content_types.items():
        assert set(responses[status]["content"]) == types


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_every_route_declares_its_422_and_every_error_body_is_json_with_a_schema(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    responses = operation["responses"]
    assert "422" in responses
    for status, response in responses.items():
        if status.startswith(("4", "5")):
            (schema,) = [c["schema"] for c in response["content"].values()]
            assert response["content"].keys() == {JSON} and schema, (status, response)


def test_the_intake_routes_document_their_raw_lead_body() -> None:
    for path in (
        "/flows/{flow_id}/sources/{source_id}",
        "/flows/{flow_id}/sources/{source_id}/ping",
    ):
        body = DOC["paths"][path]["post"]["requestBody"]
        assert set(body["content"]) == {
            "application/json",
            "application/x-www-form-urlencoded",
            "application/xml",
        }
    params = DOC["paths"]["/flows/{flow_id}/sources/{source_id}"]["post"]["parameters"]
    assert "ping_id" in [p["name"] for p in params]


@pytest.mark.parametrize("path", ["/exports", "/feedback?event_id=E", "/ui/api/leads/search"])
def test_a_json_body_that_is_not_utf8_is_the_400_the_document_declares(path: str) -> None:
    answer = admin_client(APP).post(
        path, content=b"\xff#", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400  # FastAPI's, before any route or dependency runs
    assert answer.json() == {"detail": "There was an error parsing the body"}
    assert "400" in DOC["paths"][path.split("?")[0]]["post"]["responses"]
