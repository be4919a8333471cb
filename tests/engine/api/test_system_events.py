"""``GET /system-events``: published system events from Postgres, paged by ``after_id``,
for keys with ``flows:admin``, each key seeing only the flows it may."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.access.store import create_key
from engine.api.app import create_app
from engine.runtime.registry import apply_flow, delete_flow
from engine.settings import Settings
from engine.state.outbox import mark_published, record_system_event
from engine.state.postgres import connect, migrate_state
from tests.factories import make_flow

pytestmark = pytest.mark.stack


@pytest.fixture
def settings_(stack: Settings, unique_id: str) -> Settings:
    settings = stack.model_copy(
        update={"db_schema": unique_id, "export_worker_in_api": False,
                "api_key_cache_seconds": 0.0}
    )  # fmt: skip
    migrate_state(settings)
    return settings


def client(settings: Settings, scopes: list[str], flows: list[str] | None = None) -> TestClient:
    _, key = create_key(settings, "k", scopes, flows)
    return TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})


def seed(settings: Settings) -> list[str]:
    """Five events of two flows and of none; the last one still pending."""
    with connect(settings) as conn, conn.transaction():
        made = [
            record_system_event(conn, type_, subject=subject, data=data, flow_id=flow, reason=why)
            for type_, flow, subject, data, why in [
                ("flow.created", "a", "flows/a", {"id": "a", "version": 1}, None),
                ("event_destination.activated", "a", "flows/a/destinations/s3-x",
                 {"key": "s3-x", "state": "active"}, "verified at flow apply"),
                ("flow.created", "b", "flows/b", {"id": "b", "version": 1}, None),
                ("task_run.completed", None, "exports/1", {"id": "1"}, None),
                ("flow.deleted", "a", "flows/a", {"id": "a", "version": 1}, None),
            ]
        ]  # fmt: skip
        mark_published(conn, [e.id for e in made[:4]])
    return [e.id for e in made]


def ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [e["id"] for e in answer.json()]


def test_pages_by_after_id_through_every_published_event_once(settings_: Settings) -> None:
    made = seed(settings_)
    admin = client(settings_, ["flows:admin"])

    first = admin.get("/system-events", params={"limit": 2})
    second = admin.get("/system-events", params={"limit": 2, "after_id": ids(first)[-1]})
    third = admin.get("/system-events", params={"limit": 2, "after_id": ids(second)[-1]})

    assert ids(first) + ids(second) == made[:4]  # the pending one is not listed
    assert ids(third) == []
    assert first.json()[1] == {
        "id": made[1], "type": "event_destination.activated", "flow_id": "a",
        "subject": "flows/a/destinations/s3-x", "data": {"key": "s3-x", "state": "active"},
        "reason": "verified at flow apply", "occurred_at": first.json()[1]["occurred_at"],
    }  # fmt: skip
    assert first.json()[1]["occurred_at"].endswith("Z")


def test_filters_by_type_and_refuses_an_unknown_cursor(settings_: Settings) -> None:
    made = seed(settings_)
    admin = client(settings_, ["flows:admin"])
    assert ids(admin.get("/system-events", params={"type": "flow.created"})) == [made[0], made[2]]
    two_types = [("type", "flow.created"), ("type", "task_run.completed")]
    both = admin.get("/system-events", params=two_types)
    assert ids(both) == [made[0], made[2], made[3]]
    unknown = admin.get("/system-events", params={"after_id": made[4]})  # pending: not listed
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["query", "after_id"]
    assert admin.get("/system-events", params={"type": "Flow created"}).status_code == 422
    assert admin.get("/system-events", params={"flow": "a"}).status_code == 422  # unknown param


def test_needs_flows_admin_and_a_restricted_key_sees_only_its_flows(settings_: Settings) -> None:
    made = seed(settings_)
    reader = client(settings_, ["events:read", "stats", "exports", "pii:read"])
    answer = reader.get("/system-events")
    assert answer.status_code == 403
    assert answer.json() == {"error": "forbidden", "reason": "This key lacks the scope flows:admin"}
    assert TestClient(create_app(settings_)).get("/system-events").status_code == 401

    only_a = client(settings_, ["flows:admin"], ["a"])
    assert ids(only_a.get("/system-events")) == [made[0], made[1]]  # not b's, not flowless


def test_a_flow_applied_and_deleted_is_served_with_its_definitions(
    settings_: Settings, unique_id: str
) -> None:
    flow = make_flow(unique_id, "http://127.0.0.1:9/leads")
    applied = apply_flow(settings_, flow).flow
    delete_flow(settings_, flow.id, must_exist=True)

    answer = client(settings_, ["flows:admin"]).get("/system-events")

    assert answer.status_code == 200, answer.text
    assert [(e["type"], e["subject"], e["data"]) for e in answer.json()] == [
        ("flow.created", f"flows/{flow.id}", applied.model_dump(mode="json")),
        ("flow.deleted", f"flows/{flow.id}", applied.model_dump(mode="json")),
    ]
