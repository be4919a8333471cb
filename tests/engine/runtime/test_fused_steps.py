"""A filter after an event-reading step decides in that step's worker (``fuse_pure_steps``):
the same events on the same topics, in one transaction's records, and the predecessor's
event no longer marked as a hand-off (so the filter's own worker leaves it alone).

No Kafka: handlers made by ``make_handler`` and driven with stand-in messages; the whole
flow fused and unfused over a real broker is ``tests/engine/runtime/test_pipeline.py``.
"""

from __future__ import annotations

from typing import cast

import pytest
from confluent_kafka import Message

from engine.flows import Flow, parse_flow
from engine.runtime.handlers import Record, fused_into, make_handler
from engine.runtime.handlers.base import EventInputHandler
from engine.settings import Settings
from engine.topics import HANDOFF_HEADER, TYPE_HEADER, events_topic
from schemas.codec import default_codec
from tests.engine.runtime.handler_fakes import FakeMessage, handoff

FLOW = """
id: fused
name: Fused
steps:
  - {id: source, kind: source, name: Source, settings: {fields: [{name: state}, {name: zip}]}}
  - id: area
    kind: filter
    name: Area
    settings: {rules: [{name: Area, field: lead.state, op: in, value: [TX, CA]}]}
  - id: zip
    kind: filter
    name: Zip
    settings: {rules: [{name: Zip, field: lead.zip, op: exists}]}
  - {id: buyer, kind: recipient, name: Buyer, settings: {url: http://buyer.test/leads}}
"""


@pytest.fixture
def flow() -> Flow:
    return parse_flow(FLOW, "fused.yaml")


def handler(flow: Flow, step_id: str, fuse: bool) -> EventInputHandler:
    made = make_handler(flow, step_id, "host", default_codec(), Settings(fuse_pure_steps=fuse))
    assert isinstance(made, EventInputHandler)
    return made


def written(records: list[Record], flow: Flow, own: str) -> list[tuple[str, str, bool]]:
    """(topic, event type, hand-off?) of each record, the step's own topic named."""
    codec = default_codec()
    topic = events_topic(flow.id, own)
    return [
        (r.topic or topic, codec.decode(r.value)["type"], (HANDOFF_HEADER, b"1") in r.headers)
        for r in records
    ]


def as_message(record: Record, topic: str) -> Message:
    return cast(Message, FakeMessage(record.value, record.key, record.headers, topic=topic))


def test_a_chain_of_filters_decides_in_the_first_ones_worker(flow: Flow) -> None:
    fused = handler(flow, "area", fuse=True)
    records = fused.handle(handoff({"lead.state": "TX", "lead.zip": "75001"}, flow_id="fused"))
    assert written(records, flow, "area") == [
        (events_topic("fused", "area"), "filter.passed", False),
        (events_topic("fused", "zip"), "filter.passed", True),  # the buyer's input
    ]
    assert [h for h in records[0].headers if h[0] == TYPE_HEADER] == [
        (TYPE_HEADER, b"filter.passed")
    ]


def test_fused_and_unfused_write_the_same_events(flow: Flow) -> None:
    lead = handoff({"lead.state": "TX"}, flow_id="fused")  # no zip: the second filter stops it
    fused = written(handler(flow, "area", fuse=True).handle(lead), flow, "area")
    area = handler(flow, "area", fuse=False).handle(lead)
    (passed,) = area
    zip_records = handler(flow, "zip", fuse=False).handle(
        as_message(passed, events_topic("fused", "area"))
    )
    unfused = written(area, flow, "area") + written(zip_records, flow, "zip")
    assert [(t, e) for t, e, _ in fused] == [(t, e) for t, e, _ in unfused]
    assert [t for _, t, _ in fused] == ["filter.passed", "filter.failed", "flow.completed"]
    codec = default_codec()
    fused_events = [codec.decode(r.value) for r in handler(flow, "area", fuse=True).handle(lead)]
    unfused_events = [codec.decode(r.value) for r in area + zip_records]
    for mine, theirs in zip(fused_events, unfused_events, strict=True):
        fields = ("id", "step_id", "outcome", "reason", "vars", "step_count")
        assert [mine[f] for f in fields] == [theirs[f] for f in fields]


def test_the_filters_own_worker_leaves_a_fused_lead_alone(flow: Flow) -> None:
    records = handler(flow, "area", fuse=True).handle(handoff({"lead.state": "TX"}, "fused"))
    area_event = as_message(records[0], events_topic("fused", "area"))
    assert handler(flow, "zip", fuse=True).handle(area_event) == []


def test_a_stopped_lead_is_not_handed_to_the_filter(flow: Flow) -> None:
    records = handler(flow, "area", fuse=True).handle(handoff({"lead.state": "WY"}, "fused"))
    assert [(t, h) for _, t, h in written(records, flow, "area")] == [
        ("filter.failed", False),
        ("flow.completed", False),
    ]


def test_only_pure_steps_are_fused(flow: Flow) -> None:
    assert handler(flow, "zip", fuse=True).successor is None  # the buyer calls: its own worker
    assert handler(flow, "area", fuse=False).successor is None


def test_the_fused_steps_worker_knows_who_decides_its_leads(flow: Flow) -> None:
    on, off = Settings(fuse_pure_steps=True), Settings(fuse_pure_steps=False)
    assert [fused_into(flow, s.id, on) for s in flow.steps] == [None, None, "area", None]
    assert [fused_into(flow, s.id, off) for s in flow.steps] == [None, None, None, None]
