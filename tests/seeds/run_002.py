"""A run of seed 002's whole event vocabulary on the stack: the step workers, the feedback
worker, and the analytics projection fed with the run's own events.

The flow is ``fields_flow`` (source, paid phone check retried once, service-area filter,
buyer that times out after 500 ms); each lead is marked so the demo buyer and its phone
service answer the way one event type needs (``engine.demo.buyer``).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from engine.demo.buyer import BuyerServer
from engine.flows import Flow
from engine.ops.submit import publish_leads
from engine.runtime.feedback_worker import build_feedback_loop, publish_feedback
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from tests.engine.runtime.test_event_fields import GOOD, fields_flow, post_over_http
from tests.kafka_helpers import events_by_lead, read_events, run_steps
from tests.waiting import wait_until

Event = dict[str, Any]

# Each lead and what it is for, by the email the buyer and the phone service read.
CASES: dict[str, dict[str, Any]] = {
    "converted": {**GOOD, "email": "ada@example.com"},  # delivered, then converts
    "returned": {**GOOD, "email": "bob@example.com"},  # delivered, then returned
    "out_of_area": {**GOOD, "email": "wy@example.com", "state": "WY"},  # filter.failed
    "rejected": {"first_name": "NoEmail"},  # source.rejected
    "refused": {**GOOD, "email": "c+reject@example.com"},  # recipient.failed
    "buyer_error": {**GOOD, "email": "d+error@example.com"},  # recipient.error (HTTP 500)
    "no_data": {**GOOD, "email": "e+unknown@example.com"},  # enhancement.failure
    "service_down": {**GOOD, "email": "f+down@example.com"},  # enhancement.error, retried
}


class RunDeliveries:
    """The feedback worker's lookup (``engine.runtime.handlers.feedback.Deliveries``) over
    the run's events as read back from the broker, instead of the timeline projection."""

    def __init__(self, timelines: dict[str, list[Event]]) -> None:
        self.timelines = timelines

    def find(self, event_id: str) -> tuple[Event | None, list[Event]]:
        for timeline in self.timelines.values():
            for event in timeline:
                if event["id"] == event_id:
                    return event, timeline
        return None, []

    def close(self) -> None:
        """Nothing to release."""


def count(events: list[Event], event_type: str) -> int:
    return sum(e["type"] == event_type for e in events)


def run_analytics_flow(stack: Settings, unique_id: str) -> tuple[Flow, dict[str, str], list[Event]]:
    """The flow, each case's lead id, and every event of the run (feedback included)."""
    # The breaker on (off by default), so calls record its state as a deployment would.
    settings = stack.model_copy(
        update={"feedback_topic": f"leadflow.feedback.{unique_id}", "call_breaker_failures": 5}
    )
    buyer = BuyerServer(port=0, mix=False)
    buyer.start_in_thread()
    flow = fields_flow(unique_id, buyer.url.rsplit("/", 1)[0])
    prepare_topics(settings, flow)
    stop = threading.Event()
    threads = run_steps(settings, flow, stop)
    try:
        ids = dict(zip(CASES, publish_leads(settings, flow.id, list(CASES.values())), strict=True))
        ids["over_http"] = post_over_http(
            settings, flow, {**GOOD, "email": "h@example.com"}, "203.0.113.7"
        )
        events = wait_until(
            lambda: read_events(settings, flow, 5),
            90,
            f"{len(ids)} leads of {flow.id} to complete",
            until=lambda events: count(events, "flow.completed") >= len(ids),
            every=1,
        )
        timelines = events_by_lead(events)
        for case, kind in (("converted", "conversion"), ("returned", "return")):
            delivery = next(e for e in timelines[ids[case]] if e["type"] == "recipient.delivered")
            body = {"event_id": delivery["id"], "type": kind, "reason": f"Buyer says {kind}"}
            if kind == "conversion":
                body["value"] = 120.0  # what the converted lead was worth to the buyer
            publish_feedback(settings, orjson.dumps(body))
        loop = build_feedback_loop(settings, RunDeliveries(timelines))
        feedback = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        feedback.start()
        threads.append(feedback)
        events = wait_until(
            lambda: read_events(settings, flow, 5),
            60,
            "both feedbacks processed",
            until=lambda events: count(events, "feedback.processed") >= 2,
            every=1,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        buyer.stop()
    return flow, ids, events
