"""Which roles run: a flow without destinations to stream to runs no streamer.

Its streamer returned at once, and the supervisor restarted it every few seconds,
forever (113 restarts in 6 minutes).
"""

from __future__ import annotations

from engine.flows import Flow
from engine.supervisor import registry_role_problems, registry_roles, role_names
from tests.factories import make_flow

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
                                    "feedback", "export-scheduler"]  # fmt: skip
    assert registry_roles([none, disabled]) == [
        "projector", "analytics", "feedback", "export-scheduler",
        "none:source", "none:service-area", "none:premier",
        "unused:source", "unused:service-area", "unused:premier",
    ]  # fmt: skip
    assert registry_role_problems(["streamer:none"], [none]) == [
        "streamer:none: flow none has no enabled destinations to stream to"
    ]
