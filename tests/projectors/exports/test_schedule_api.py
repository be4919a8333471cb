"""Export schedules and their runs over HTTP: create (refusing a bad cron or a path out of
the local folder), list, show with runs, disable; ``/task-runs`` with status and error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.flows import Flow
from engine.settings import Settings
from projectors.exports.schedule_api import router
from projectors.exports.scheduler import ExportScheduler
from projectors.exports.schedules import sync_flow_schedules
from projectors.store import connect
from tests.factories import make_flow
from tests.keys import admin_client
from tests.system_outbox import ensure_outbox, system_events

pytestmark = pytest.mark.stack


@pytest.fixture
def api_settings(export_settings: Settings, tmp_path: Path) -> Settings:
    return export_settings.model_copy(update={"export_local_dir": tmp_path})


@pytest.fixture
def http(api_settings: Settings) -> TestClient:
    app = FastAPI()
    app.state.settings = api_settings
    app.include_router(router)
    return admin_client(app)


def test_a_bad_schedule_is_refused_with_what_is_wrong(http: TestClient) -> None:
    local = {"kind": "local"}
    bad_cron = http.post("/export-schedules", json={"cron": "daily", "destination": local})
    assert bad_cron.status_code == 422 and "not a cron expression" in bad_cron.text
    escape = {"cron": "0 * * * *", "destination": {"kind": "local", "path": "../../etc"}}
    assert http.post("/export-schedules", json=escape).status_code == 422
    typo = {"cron": "0 * * * *", "destination": {"kind": "local"}, "query": {"flowid": "x"}}
    assert http.post("/export-schedules", json=typo).status_code == 422
    assert http.get("/export-schedules").json() == []


def test_a_schedule_bounded_by_an_unknown_event_is_refused(
    http: TestClient, flow_events: list[Any]
) -> None:
    body = {"cron": "0 * * * *", "destination": {"kind": "local"},
            "query": {"after_id": "0" * 26}}  # fmt: skip
    refused = http.post("/export-schedules", json=body)
    assert refused.status_code == 422 and "after_id" in refused.text
    body["query"] = {"after_id": flow_events[0]["id"]}
    assert http.post("/export-schedules", json=body).status_code == 201


def test_schedules_and_their_runs_with_status_and_error(
    http: TestClient, api_settings: Settings, flow_events: list[Any]
) -> None:
    body = {
        "cron": "*/10 * * * *",
        "query": {"flow_id": api_settings.db_schema, "format": "jsonl"},
        "destination": {"kind": "local", "path": "tenminutes"},
        "max_attempts": 2,
    }
    created = http.post("/export-schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["cron"] == "*/10 * * * *" and schedule["enabled"] is True
    assert schedule["clear_text"] is True  # the tests' key holds pii:read
    assert created.headers["Location"].endswith(f"/export-schedules/{schedule['id']}")
    assert [s["id"] for s in http.get("/export-schedules").json()] == [schedule["id"]]

    # One run completes; the next fails (its folder is taken by a file) and waits to retry.
    ensure_outbox(api_settings)
    created_at = datetime.fromisoformat(schedule["created_at"])
    minutes = timedelta(minutes=10 - created_at.minute % 10)
    first_time = created_at.replace(second=0, microsecond=0) + minutes
    now = [first_time]
    worker = ExportScheduler(api_settings, clock=lambda: now[0], name="api-test")
    root = api_settings.export_local_dir
    assert root is not None
    with connect(api_settings) as conn:
        assert worker.run_once(conn) is not None
        folder = root / "tenminutes" / schedule["id"]
        folder.rename(root / "moved")
        folder.write_text("in the way")
        now[0] = first_time + timedelta(minutes=10)
        assert worker.run_once(conn) is not None

    runs = http.get("/task-runs").json()
    assert [r["status"] for r in runs] == ["queued", "completed"]  # newest first
    failing, done = runs
    assert failing["attempts"] == 1 and failing["error"] and failing["next_attempt_at"]
    assert done["error"] is None and done["rows"] == len(flow_events)
    assert done["output_location"].startswith("file://")
    expected = first_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")
    assert done["scheduled_for"] == expected
    assert http.get("/task-runs", params={"status": "completed"}).json() == [done]
    shown = http.get(f"/export-schedules/{schedule['id']}").json()
    assert [r["id"] for r in shown["runs"]] == [failing["id"], done["id"]]

    assert http.delete(f"/export-schedules/{schedule['id']}").status_code == 204
    assert http.get(f"/export-schedules/{schedule['id']}").json()["enabled"] is False
    # The run waiting for its retry is canceled with the schedule.
    assert [r["status"] for r in http.get("/task-runs").json()] == ["canceled", "completed"]
    assert [e["reason"] for e in system_events(api_settings, "task_run.canceled")] == [
        "the schedule was disabled"
    ]
    assert http.get("/export-schedules/nope").status_code == 404
    assert http.delete("/export-schedules/nope").status_code == 404


def test_a_flow_files_schedule_is_listed_but_changed_only_in_its_flow(
    http: TestClient, api_settings: Settings
) -> None:
    http.get("/export-schedules")  # the tables, as the API's first request makes them
    definition = make_flow("fromfile", "http://127.0.0.1:9/leads").model_dump(mode="json")
    export = {"id": "daily", "cron": "0 3 * * *", "destination": {"kind": "local"}}
    flow = Flow.model_validate({**definition, "exports": [export]})
    with connect(api_settings) as conn:
        sync_flow_schedules(conn, [flow], datetime.now(UTC), every_flow=False)
    (listed,) = http.get("/export-schedules").json()
    assert listed["id"] == "flow.fromfile.daily" and listed["query"]["flow_id"] == "fromfile"
    refused = http.delete("/export-schedules/flow.fromfile.daily")
    assert refused.status_code == 409 and "remove it from the flow" in refused.text
