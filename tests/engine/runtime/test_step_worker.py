"""A step worker's subscription, and when a new flow version restarts it (no services)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from engine.flows import Flow
from engine.runtime.registry import FlowRegistry
from engine.runtime.step_worker import FlowChangedError, follow_registry, topics_read
from engine.settings import Settings
from engine.topics import events_topic, intake_topic, retry_topic
from schemas.codec import EventCodec
from tests.factories import make_flow

BUYER = "http://127.0.0.1:1/leads"


class _Registry:
    """``FlowRegistry``'s reads, holding one flow."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def refresh(self, timeout: float) -> None:
        pass

    def get(self, flow_id: str) -> Flow | None:
        return self.flow if flow_id == self.flow.id else None


def _next_version(flow: Flow, change: Any) -> Flow:
    data = flow.model_dump(mode="json")
    change(data["steps"])
    data["version"] = flow.version + 1
    return Flow.model_validate(data)


def test_a_step_reads_its_input_and_its_retry_topic_if_it_retries() -> None:
    flow = make_flow("sw", BUYER)
    assert topics_read(flow, "service-area") == (events_topic("sw", "source"),)
    assert topics_read(flow, "source") == (intake_topic("sw"),)
    assert topics_read(flow, "premier") == (
        events_topic("sw", "service-area"),
        retry_topic("sw", "premier"),
    )


def test_a_step_that_changed_kind_or_input_is_restarted() -> None:
    """A kind change is another loop (a calling step's) and another topic (retries): the
    worker must start again, as it must for a moved input (its static member id changes)."""
    v1 = make_flow("sw", BUYER)
    registry = _Registry(v1)
    codec = cast(EventCodec, None)  # not reached: no handler is made for a moved step
    watch = follow_registry(Settings(), cast(FlowRegistry, registry), v1, "service-area", codec)
    assert watch() is None  # the same version
    as_buyer = _next_version(
        v1, lambda steps: steps.__setitem__(1, {**steps[2], "id": steps[1]["id"]})
    )
    registry.flow = as_buyer
    with pytest.raises(FlowChangedError, match="service-area"):
        watch()
    watch = follow_registry(Settings(), cast(FlowRegistry, registry), v1, "premier", codec)
    registry.flow = _next_version(v1, lambda steps: steps.insert(2, {**steps[1], "id": "more"}))
    with pytest.raises(FlowChangedError, match="premier"):
        watch()
