"""The flow registry's reading of its topic's records, without a broker."""

from __future__ import annotations

from typing import Any

import orjson
from structlog.testing import capture_logs

from engine.runtime.registry import FlowRegistry
from engine.settings import Settings
from tests.engine.runtime.kafka.fakes import FakeMessage
from tests.factories import make_flow


def applied(flow_id: str) -> FakeMessage:
    flow = make_flow(flow_id, "http://127.0.0.1:9/leads")
    body = orjson.dumps({"type": "flow.created", "definition": flow.model_dump(mode="json")})
    return FakeMessage(topic="leadflow.flows", key=flow_id.encode(), value=body)


def test_an_unreadable_record_is_skipped_and_said_and_the_flows_after_it_are_read() -> None:
    # Raising ended every worker reading the registry, again at each restart.
    registry = FlowRegistry(Settings())
    junk = FakeMessage(topic="leadflow.flows", offset=7, key=b"x", value=b"{not json")
    no_definition = FakeMessage(topic="leadflow.flows", offset=8, key=b"y", value=b"{}")
    records: Any = [applied("first"), junk, no_definition, applied("second")]

    with capture_logs() as logs:
        assert registry.apply(records) is True

    assert [f.id for f in registry.flows()] == ["first", "second"]
    assert [(e["event"], e["offset"]) for e in logs] == [
        ("flow registry record unreadable, skipped", 7),
        ("flow registry record unreadable, skipped", 8),
    ]


def test_a_tombstone_removes_its_flow() -> None:
    registry = FlowRegistry(Settings())
    records: Any = [applied("gone"), FakeMessage(key=b"gone", value=None)]
    assert registry.apply(records) is True
    assert registry.get("gone") is None
