"""Checks every route of ``create_app`` gets (``engine.web.validation``): text Postgres cannot
hold is a 422 naming where it was, and no 422 echoes a large input back.

The cases are drawn from ``app.routes``, so a route added later is covered without a word here.
The checks run before any route touches a database, so these tests need no stack: FastAPI does
open a route's dependencies (its database connection) before it reports a bad body, so those
are replaced by a connection that fails the test if a refused request ever used it.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import BaseRoute

from engine.api.app import create_app
from engine.settings import Settings
from engine.web.validation import MAX_ECHO, MAX_ERRORS, unstorable
from projectors.api import _connection
from projectors.exports.api import _jobs_connection
from tests.keys import admin_client

NUL = "a\x00b"


class _UnusedConnection:
    """Opened for a route whose request is then refused; any use is a bug (a 500 here)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused request used its database connection ({name})")


def _no_database() -> Iterator[_UnusedConnection]:
    yield _UnusedConnection()


# The body limit (413, tests/security) is raised here: these tests send bodies of megabytes
# to check what a 422 echoes of them.
APP = create_app(Settings(export_worker_in_api=False, max_body_bytes=50_000_000))
APP.dependency_overrides.update({_connection: _no_database, _jobs_connection: _no_database})


def _model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a parameter is declared as (``Annotated``/``| None`` unwrapped)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _model(arg)) is not None:
            return found
    return None


def _query_names(dependant: Dependant) -> list[str]:
    """Every query parameter of a route, its dependencies' included."""
    names = []
    for field in dependant.query_params:
        model = _model(field.field_info.annotation)
        if model is None:
            names.append(field.alias)
        else:  # a query model: each of its fields is a parameter of its own
            names.extend(f.alias or name for name, f in model.model_fields.items())
    for sub in dependant.dependencies:
        names.extend(_query_names(sub))
    return names


def _body_names(route: APIRoute) -> list[str]:
    if route.body_field is None:
        return []
    model = _model(route.body_field.field_info.annotation)
    return list(model.model_fields) if model is not None else []


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every route of an app, those of included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            # Newer FastAPI includes a router as one lazy route holding the router.
            yield from api_routes(router.routes)


def _cases() -> list[Any]:
    """(method, route path, where the NUL goes) for every location of every route."""
    cases = []
    for route in api_routes(APP.routes):
        method = sorted(route.methods)[0]
        wheres = [
            *(("path", name) for name in route.param_convertors),
            *(("query", name) for name in _query_names(route.dependant)),
            *(("body", name) for name in _body_names(route)),
        ]
        cases.extend(
            pytest.param(method, route.path, where, id=f"{method} {route.path} {'.'.join(where)}")
            for where in wheres
        )
    return cases


def _request(method: str, path: str, where: tuple[str, str], value: str) -> dict[str, Any]:
    """A request to ``path`` with ``value`` at ``where`` and harmless values elsewhere."""
    kind, name = where
    path_values = {
        p: (quote(value, safe="") if where == ("path", p) else "x") for p in _path_params(path)
    }
    request: dict[str, Any] = {"method": method, "url": path.format(**path_values)}
    if kind == "query":
        request["params"] = {name: value}
    if kind == "body":
        request["json"] = {name: value}
    return request


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


CASES = _cases()


def test_the_cases_cover_every_route_family() -> None:
    paths = {case.values[1] for case in CASES}
    for expected in (
        "/events",
        "/leads/{lead_id}/events",
        "/events/export",
        "/flows/{flow_id}/events/export",
        "/exports",
        "/exports/{job_id}",
        "/events/stats",
        "/flows/{flow_id}/analytics/steps",
        "/feedback",
        "/flows/{flow_id}/sources/{source_id}",
        "/flows/{flow_id}/sources/{source_id}/ping",
        "/ui/api/leads/search",
        "/ui/api/leads/{lead_id}",
        "/ui/leads/{lead_id}",
    ):
        assert expected in paths
    wheres = {(case.values[1], case.values[2]) for case in CASES}
    assert ("/exports", ("body", "flow_id")) in wheres
    assert ("/events/export", ("query", "outcome")) in wheres
    assert ("/feedback", ("query", "event_id")) in wheres


@pytest.mark.parametrize(("method", "path", "where"), CASES)
def test_a_nul_anywhere_is_a_422_naming_the_parameter(
    method: str, path: str, where: tuple[str, str]
) -> None:
    answer = admin_client(APP, raise_server_exceptions=False).request(
        **_request(method, path, where, NUL)
    )
    assert answer.status_code == 422, answer.text
    (error,) = [e for e in answer.json()["detail"] if e["type"] == "string_unstorable"]
    assert error["loc"] == list(where)
    assert error["msg"] == "Value holds a NUL character (U+0000), which stored text cannot hold"
    assert error["input"] == NUL


def test_nested_body_strings_and_keys_are_named_by_their_path() -> None:
    client = admin_client(APP)
    answer = client.post("/exports", json={"type": ["source.accepted", NUL]})
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "type", 1]]
    answer = client.post("/ui/api/leads/search", json={NUL: "x"})
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", NUL]]


def test_a_query_parameter_name_and_a_header_are_checked() -> None:
    client = admin_client(APP)
    answer = client.get("/events", params={NUL: "1"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", NUL]
    answer = client.get("/exports/x", headers={"X-Leadflow-User": NUL})
    assert answer.status_code == 422
    assert ["header", "x-leadflow-user"] in [e["loc"] for e in answer.json()["detail"]]


def test_storable_text_passes() -> None:
    assert unstorable("Zoë 🚀 العربية \ufffd \t\n") is None
    assert unstorable("a\ud800b") is not None  # a JSON "\ud800" escape: no UTF-8 for it


# -- no 422 echoes a large input ----------------------------------------------------------


def test_a_10_mb_value_is_refused_with_a_small_answer_that_says_it_was_cut() -> None:
    huge = "x" * 10_000_000
    answer = admin_client(APP).post("/exports", json={"flow_id": huge})
    assert answer.status_code == 422
    assert len(answer.content) < 2000
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "flow_id"]
    assert error["msg"] == "String should have at most 64 characters"
    assert error["input"] == "x" * MAX_ECHO + "... (truncated: 10,000,000 characters)"


def test_a_large_object_echoed_whole_by_pydantic_is_cut_too() -> None:
    body = {"type": "return", "reason": "y" * 5_000_000}
    answer = admin_client(APP).post("/feedback", json=body)  # no event_id: the whole query
    assert answer.status_code == 422 and len(answer.content) < 4000
    errors = {tuple(e["loc"]): e for e in answer.json()["detail"]}
    assert errors[("body", "reason")]["input"].endswith("(truncated: 5,000,000 characters)")


def test_a_body_of_many_bad_items_shows_the_first_errors_and_counts_the_rest() -> None:
    answer = admin_client(APP).post("/exports", json={"type": [1] * 100_000})
    assert answer.status_code == 422 and len(answer.content) < 20_000
    detail = answer.json()["detail"]
    assert [e["loc"] for e in detail[:MAX_ERRORS]] == [["body", "type", i] for i in range(20)]
    assert detail[MAX_ERRORS:] == [
        {"type": "too_many_errors", "loc": [], "msg": "99,980 more errors not shown"}
    ]


def test_a_lone_surrogate_in_a_json_body_is_a_422_that_can_be_encoded() -> None:
    answer = admin_client(APP).post(
        "/exports",
        content=b'{"format": "csv", "lead_id": "a\\ud800b"}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "lead_id"]
    assert "lone surrogate (U+D800)" in error["msg"]
    assert error["input"] == "a\ufffdb"  # echoed as U+FFFD: the answer must be UTF-8
