"""Stamping drafts into events: what every event says about its flow, and when it happened."""

from __future__ import annotations

from typing import Any

import yaml

from engine.events import StepIdentity, Timing, flow_context, stamp_events
from engine.flows import Flow, parse_flow
from engine.steps.base import EventDraft
from engine.steps.pings import ping_limit_objects
from tests.factories import DEMO_FLOW


def _flow(**changes: Any) -> Flow:
    data = yaml.safe_load(DEMO_FLOW.read_text(encoding="utf-8"))
    source = data["steps"][0]["settings"]
    source.update(changes.pop("source", {}))
    data.update(changes)
    return parse_flow(yaml.safe_dump(data))


PINGS = {
    "intake": {
        "auth": {"key_env": "WEB_KEY"},
        "ping": {
            "fields": ["state"],
            "limits": [
                {"maximum": 100, "duration": "day", "scope": "flow"},
                {"name": "burst", "maximum": 10, "duration": "minute"},
            ],
        },
    }
}
ARCHIVE = {"id": "archive", "kind": "s3", "bucket": "leadflow-events", "prefix": "p"}


def test_a_flow_without_destinations_or_ping_limits_has_an_empty_context() -> None:
    context = flow_context(_flow(destinations=[]))
    assert (context.firehose, context.flow_ping_limits, context.source_ping_limits) == (
        None,
        None,
        None,
    )


def test_the_context_names_enabled_destinations_and_each_ping_limit_with_its_counter() -> None:
    disabled = {**ARCHIVE, "id": "old", "enabled": False}
    context = flow_context(_flow(source=PINGS, destinations=[ARCHIVE, disabled]))
    assert context.firehose == {"destinations": ["archive"]}
    assert context.flow_ping_limits == [
        {
            "id": "ping:flow/demo:day@UTC",
            "name": None,
            "maximum": 100,
            "duration": "day",
            "time_zone": "UTC",
            "reached": None,
        }
    ]
    assert context.source_ping_limits is not None
    assert context.source_ping_limits[0]["id"] == "ping:source/demo/source:minute@UTC:burst"


def test_the_limit_that_stopped_a_ping_is_the_one_reached() -> None:
    limits = _flow(source=PINGS).steps[0].settings.intake.ping.limits  # type: ignore[union-attr]
    flow_limits, source_limits = ping_limit_objects(
        "demo", "source", limits, "ping:flow/demo:day@UTC"
    )
    assert [x["reached"] for x in flow_limits + source_limits] == [True, False]


def test_events_carry_the_flow_context_and_a_draft_may_record_an_earlier_moment() -> None:
    flow = _flow(source=PINGS, destinations=[ARCHIVE])
    who = StepIdentity("demo", 1, "source", "Web", 0, "h", "0.1.0", context=flow_context(flow))
    drafts = [
        EventDraft("source.submitted", "success", at_ms=1_000),
        EventDraft("source.accepted", "success"),
    ]
    submitted, accepted = stamp_events(drafts, who, "01LEAD", 1_000, {}, Timing(1_050, 1_080, 40))
    assert (submitted["timestamp"], submitted["ms"], submitted["lag_ms"]) == (1_000, 0, 0)
    assert (accepted["start_timestamp"], accepted["timestamp"], accepted["ms"]) == (
        1_050,
        1_080,
        30,
    )
    # The parsing time, as the seed measures it: accepted - submitted.
    assert accepted["timestamp"] - submitted["timestamp"] == 80
    for event in (submitted, accepted):
        assert event["firehose"] == {"destinations": ["archive"]}
        assert event["flow_ping_limits"] is not None
        assert event["source_ping_limits"] is not None
        assert event["version"] == "6"
