"""Every route x every kind of bad key: refused each time.

The routes come from the app itself, so a route added without the guard fails here: with
no key it would answer, and with a key of the wrong scope it would not answer 403.
Public on purpose: ``/healthz``, ``/metrics`` (unless ``metrics_need_key``) and the
operator UI's page shells (HTML with no lead data; the data comes from ``/ui/api``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute

from engine.api.app import create_app
from engine.settings import Settings
from tests.security.conftest import Seeded

pytestmark = pytest.mark.stack


def _api_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every API route, included routers' routes too (FastAPI keeps those
    behind an ``_IncludedRouter`` with the router it was given)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield from ((m, prefix + route.path) for m in route.methods if m != "HEAD")
        elif hasattr(route, "original_router"):
            inner = prefix + (route.include_context.prefix or "")
            yield from _api_routes(route.original_router.routes, inner)


APP = create_app(Settings(export_worker_in_api=False))
ROUTES = sorted(set(_api_routes(APP.routes)))
PUBLIC = {("GET", "/healthz"), ("GET", "/metrics")}
_UI_SHELL = re.compile(r"^/ui(/|$)(?!api)")
_INTAKE = re.compile(r"^/flows/\{flow_id\}/sources/\{source_id\}")
GUARDED = [
    r for r in ROUTES if r not in PUBLIC and not _UI_SHELL.match(r[1]) and not _INTAKE.match(r[1])
]
INTAKE = [r for r in ROUTES if _INTAKE.match(r[1])]
BAD_KEYS = ("none", "unknown", "garbage", "revoked")


def request_for(seeded: Seeded, method: str, path: str) -> dict[str, Any]:
    """A request that would be served with the right key: path filled, required query
    parameters and a valid body given."""
    values = {
        "flow_id": seeded.flow_a,
        "lead_id": seeded.lead_a,
        "event_id": seeded.delivery_a,
        "job_id": str(uuid.uuid4()),
        "schedule_id": "01M92TEHE070161DGG0AHEN57N",
        "source_id": "source",
        "name": "ui.js",
    }
    url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
    params: dict[str, str] = {}
    body: Any = None
    if path == "/feedback":
        params, body = {"event_id": seeded.delivery_a}, {"type": "return"}
    elif path == "/ui/api/leads/{lead_id}/diff":
        params = {"to": seeded.delivery_a}
    elif path == "/exports" and method == "POST":
        body = {"format": "csv"}
    elif path == "/export-schedules" and method == "POST":
        body = {"cron": "0 2 * * *", "destination": {"kind": "local"}}
    elif path == "/ui/api/leads/search":
        body = {"q": "grace"}
    elif _INTAKE.match(path):
        body = {"email": "a@b.example"}
    return {"method": method, "url": url, "params": params, "json": body}


def test_the_matrix_covers_the_routes_that_hold_lead_data() -> None:
    """A sanity check on the route list: if it came back empty, every test below would pass."""
    paths = {p for _, p in GUARDED}
    assert {"/events", "/events/{event_id}", "/feedback", "/exports", "/ui/api/whoami"} <= paths
    assert len(GUARDED) >= 25


@pytest.mark.parametrize("key", list(BAD_KEYS))
@pytest.mark.parametrize(("method", "path"), GUARDED, ids=[" ".join(r) for r in GUARDED])
def test_no_key_a_wrong_key_or_a_revoked_key_is_a_401(
    seeded: Seeded, method: str, path: str, key: str
) -> None:
    client = seeded.client(None if key == "none" else key)
    answer = client.request(**request_for(seeded, method, path))
    assert answer.status_code == 401, answer.text
    assert set(answer.json()) == {"error", "reason"}
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), GUARDED, ids=[" ".join(r) for r in GUARDED])
def test_a_key_without_the_routes_scope_is_a_403(seeded: Seeded, method: str, path: str) -> None:
    answer = seeded.client("intake_only").request(**request_for(seeded, method, path))
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), GUARDED, ids=[" ".join(r) for r in GUARDED])
def test_another_buyers_feedback_key_is_refused_everywhere(
    seeded: Seeded, method: str, path: str
) -> None:
    answer = seeded.client("other_buyer").request(**request_for(seeded, method, path))
    # Feedback on premier's delivery: the same 404 as an unknown event; elsewhere no scope.
    assert answer.status_code == (404 if path == "/feedback" else 403), answer.text


@pytest.mark.parametrize("key", [*BAD_KEYS, "reader", "other_buyer"])
@pytest.mark.parametrize(("method", "path"), INTAKE, ids=[" ".join(r) for r in INTAKE])
def test_intake_refuses_keys_without_its_source_scope(
    seeded: Seeded, method: str, path: str, key: str
) -> None:
    with seeded.client(None if key == "none" else key) as client:
        answer = client.request(**request_for(seeded, method, path))
    # 404 before 401: the seeded flows are not applied, so no source takes leads at all;
    # either way nothing is accepted.
    assert answer.status_code in (401, 404), answer.text
    assert answer.json()["outcome"] == "error"


def test_health_and_metrics_answer_without_a_key_unless_metrics_are_configured_to_need_one(
    seeded: Seeded,
) -> None:
    assert seeded.client().get("/healthz").status_code == 200
    assert seeded.client().get("/metrics").status_code == 200
    guarded = seeded.client(metrics_need_key=True)
    assert guarded.get("/metrics").status_code == 401
    assert seeded.client("premier", metrics_need_key=True).get("/metrics").status_code == 403
    assert seeded.client("reader", metrics_need_key=True).get("/metrics").status_code == 200


def test_the_ui_shells_are_public_but_hold_no_lead_data(seeded: Seeded) -> None:
    answer = seeded.client().get(f"/ui/leads/{seeded.lead_a}")
    assert answer.status_code == 200
    assert "grace" not in answer.text.lower()


def test_a_key_in_the_query_string_is_not_taken(seeded: Seeded) -> None:
    """URLs end up in access logs: a key there must not work (and so not be sent there)."""
    answer = seeded.client().get("/events", params={"api_key": seeded.keys["reader"]})
    assert answer.status_code == 401
