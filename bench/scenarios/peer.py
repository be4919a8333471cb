"""peer: the same filter as a Quix Streams application, exactly-once, same commit interval.

Written the way Quix's docs show: an ``Application``, a ``StreamingDataFrame``
with one ``apply(expand=True)`` that turns the hand-off event into the events
leadflow's filter records (``filter.passed``, or ``filter.failed`` and
``flow.completed``), and ``to_topic``; the Avro single-object framing as a custom (de)serializer on
leadflow's codec (parsed schema cached, as Quix's own Avro serializer does).
Settings, all documented ``Application`` parameters: ``processing_guarantee=
"exactly-once"``, ``commit_interval`` = leadflow's, ``auto_offset_reset="earliest"``,
and producer ``linger.ms``/``compression.type`` as leadflow's producer has them.
Quix consumes one message per ``poll()``: that is its design, not a setting.
"""

from __future__ import annotations

import time
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers import Deserializer, Serializer

from bench.clock import RateClock
from bench.inputs import SERVICE_AREA
from bench.scenarios.peer_settings import SETTINGS
from engine.ids import event_id
from schemas.codec import default_codec

STEP_ID, STEP_NAME, STEP_INDEX = "service-area", "Service area", 1


class LeadEventDeserializer(Deserializer):  # type: ignore[misc]  # quixstreams is untyped here
    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        return default_codec().decode(value)


class LeadEventSerializer(Serializer):  # type: ignore[misc]
    def __call__(self, value: dict[str, Any], ctx: Any) -> bytes:
        return default_codec().encode(value)


def service_area_events(event: dict[str, Any], flow_id: str) -> list[dict[str, Any]]:
    """What leadflow's filter records for a hand-off event: ``filter.passed``, or
    ``filter.failed`` and the lead's ``flow.completed`` (the two rules of the bench flow)."""
    start = time.time_ns() // 1_000_000
    snapshot = event["vars"]
    if snapshot.get("lead.state") not in SERVICE_AREA:
        outcome, reason = "failure", f"Service area: lead.state is {snapshot.get('lead.state')}"
    elif snapshot.get("lead.tcpa_consent") is not True:
        outcome, reason = "failure", "Consent given: lead.tcpa_consent is not true"
    else:
        outcome, reason = "success", None
    submitted = snapshot.get("submission.timestamp", start)
    end = time.time_ns() // 1_000_000
    decided = {
        **event,
        "id": event_id(event["lead_id"], submitted, STEP_INDEX, 0),
        "type": "filter.passed" if outcome == "success" else "filter.failed",
        "outcome": outcome,
        "reason": reason,
        "step_id": STEP_ID,
        "step_name": STEP_NAME,
        "entity_id": STEP_ID,
        "timestamp": end,
        "start_timestamp": start,
        "end_timestamp": end,
        "ms": end - start,
        "wait_ms": 0,
        "overhead_ms": end - start,
        "total_ms": max(0, end - submitted),
        "step_count": STEP_INDEX + 1,
        "appended": {},
        "cost": None,
    }
    if outcome == "success":
        return [decided]
    completed = {
        **decided,
        "id": event_id(event["lead_id"], submitted, STEP_INDEX, 1),
        "type": "flow.completed",
        "entity_id": flow_id,
        "cost": float(snapshot.get("source.cost") or 0.0),
        "revenue": 0.0,
    }
    return [decided, completed]


def run_round(params: dict[str, Any]) -> dict[str, float]:
    app = Application(
        broker_address=params["bootstrap"],
        consumer_group=f"bench.{params['run_id']}.quix.r{params['round']}",
        commit_interval=params["commit_interval_ms"] / 1000,
        **SETTINGS,
    )
    source = app.topic(
        params["input_topic"], key_deserializer="bytes", value_deserializer=LeadEventDeserializer()
    )
    sink = app.topic(
        params["output_topic"], key_serializer="bytes", value_serializer=LeadEventSerializer()
    )
    clock = RateClock(params["events"])

    def counted(event: dict[str, Any]) -> list[dict[str, Any]]:
        out = service_area_events(event, event["flow_id"])
        if clock.tick():
            app.stop()  # after this message: the loop exits and commits its checkpoint
        return out

    # expand=True: each event of the list becomes a message of its own downstream.
    sdf = app.dataframe(source).apply(counted, expand=True)
    sdf.to_topic(sink)
    app.run()  # returns once the final checkpoint is committed
    clock.finish()
    return {"events_s": clock.rate()}
