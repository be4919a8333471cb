"""Which roles run: a flow without destinations to stream to runs no streamer.

Its streamer returned at once, and the supervisor restarted it every few seconds,
forever (113 restarts in 6 minutes).
"""

from __future__ import annotations

import threading

import pytest

from engine.flows import Flow
from engine.settings import Settings
from engine.state.outbox import published_events, record_system_event
from engine.state.postgres import connect, migrate_state
from engine.supervisor import (
    registry_role_problems,
    registry_roles,
    role_names,
    run_registry_role,
)
from tests.factories import make_flow
from tests.waiting import wait_until

URL = "http://127.0.0.1:9/leads"


def with_destinations(flow_id: str, enabled: list[bool]) -> Flow:
    definition = make_flow(flow_id, URL).model_dump(mode="json")
    kept = definition["destinations"][: len(enabled)]
    definition["destinations"] = [{**d, "enabled": on} for d, on in zip(kept, enabled, strict=True)]
    return Flow.model_validate(definition)


def test_a_flow_with_an_enabled_destination_runs_a_streamer() -> None:
    flow = with_destinations("some", [False, True])
    assert "streamer" in role_names(flow)
    assert "streamer:some" in registry_roles([flow])


def test_a_flow_without_destinations_or_with_none_enabled_runs_no_streamer() -> None:
    none, disabled = with_destinations("none", []), with_destinations("unused", [False, False])
    for flow in (none, disabled):
        assert role_names(flow) == ["source", "service-area", "premier", "projector", "analytics",
                                    "feedback", "relay", "export-scheduler"]  # fmt: skip
    assert registry_roles([none, disabled]) == [
        "projector", "analytics", "feedback", "relay", "export-scheduler",
        "none:source", "none:service-area", "none:premier",
        "unused:source", "unused:service-area", "unused:premier",
    ]  # fmt: skip
    assert registry_role_problems(["streamer:none"], [none]) == [
        "streamer:none: flow none has no enabled destinations to stream to"
    ]


@pytest.mark.stack
def test_the_relay_role_publishes_what_writers_left_pending(
    stack: Settings, unique_id: str
) -> None:
    settings = stack.model_copy(update={"db_schema": unique_id})
    migrate_state(settings)
    with connect(settings) as conn, conn.transaction():
        event = record_system_event(conn, "task_run.queued", subject="exports/1", data={"id": "1"})
    stop = threading.Event()
    role = threading.Thread(target=run_registry_role, args=("relay", settings, stop), daemon=True)
    role.start()
    try:
        with connect(settings) as conn:
            published = wait_until(
                lambda: published_events(conn), 30.0, "the relay role to publish the event"
            )
    finally:
        stop.set()
        role.join(30)
    assert [e.id for e in published] == [event.id]
    assert not role.is_alive()


def test_a_flow_with_alert_rules_runs_its_evaluator() -> None:
    rules = [{"id": "rejections", "metric": "rejection_rate", "above": 30}]
    plain = with_destinations("plain", [])
    alerted = Flow.model_validate(
        {**plain.model_dump(mode="json"), "id": "watched", "alerts": rules}
    )
    assert role_names(alerted)[-1] == "alerts"
    assert "alerts" not in role_names(plain)
    assert [r for r in registry_roles([plain, alerted]) if "alerts" in r] == ["alerts:watched"]
    assert registry_role_problems(["alerts:plain", "alerts:nope"], [plain, alerted]) == [
        "alerts:plain: flow plain has no alert rules",
        "alerts:nope: no applied flow nope",
    ]
