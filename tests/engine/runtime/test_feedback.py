"""Buyer feedback: new events that refer to the delivery, applied to the lead's revenue."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer

from engine.api.app import create_app
from engine.demo.buyer import BuyerServer
from engine.ops.submit import publish_leads
from engine.runtime.feedback_worker import build_feedback_loop, publish_feedback
from engine.runtime.handlers.feedback import FeedbackHandler, rejected_topic
from engine.runtime.kafka.config import consumer_config
from engine.runtime.schema_registry import TopicCodecs
from engine.runtime.step_worker import build_step_loop, prepare_topics
from engine.settings import Settings
from engine.steps.feedback import Feedback, FeedbackRejectedError, apply_feedback, parse_feedback
from projectors.deliveries import TimelineDeliveries
from projectors.generations import migrate_database
from projectors.projector import TimelineProjector
from projectors.store import connect
from schemas.codec import default_codec
from tests.factories import make_flow, make_lead_events
from tests.kafka_helpers import events_by_lead, read_events
from tests.keys import admin_client
from tests.waiting import wait_until

LEAD = {
    "first_name": "A",
    "last_name": "B",
    "email": "a@example.com",
    "phone_1": "5125550123",
    "state": "TX",
    "tcpa_consent": True,
}
DELIVERY = {
    "id": "E1",
    "type": "recipient.delivered",
    "step_id": "premier",
    "revenue": 31.0,
    "vars": {},
}


def test_a_return_takes_the_revenue_back() -> None:
    result = apply_feedback(Feedback(event_id="E1", type="return", reason="Bad number"), DELIVERY)
    received, processed = result.events
    assert (received.type, received.reason) == ("feedback.received", "Bad number")
    assert received.vars["feedback.recipient_event_id"] == "E1"
    assert (processed.type, processed.revenue) == ("feedback.processed", 0.0)


def delivered(event_id: str, step_id: str, price: float) -> dict[str, object]:
    return {"id": event_id, "type": "recipient.delivered", "step_id": step_id,
            "revenue": price, "vars": {}}  # fmt: skip


def test_a_return_takes_back_one_buyers_price_from_a_lead_sold_to_several_once() -> None:
    first, second = delivered("E1", "premier", 31.0), delivered("E2", "summit", 12.5)
    timeline: list[dict[str, object]] = [first, second]
    returned = apply_feedback(Feedback(event_id="E2", type="return"), second, timeline)
    assert returned.events[1].revenue == 31.0

    processed = returned.events[1]
    timeline.append({"type": "feedback.processed", "vars": processed.vars})
    again = apply_feedback(Feedback(event_id="E2", type="return"), second, timeline)
    assert again.events[1].revenue == 31.0
    converted = apply_feedback(Feedback(event_id="E1", type="conversion"), first, timeline)
    assert converted.events[1].revenue == 31.0


def test_a_conversion_keeps_the_revenue() -> None:
    result = apply_feedback(Feedback(event_id="E1", type="conversion"), DELIVERY)
    assert result.events[1].revenue == 31.0


def test_feedback_for_an_unknown_event_is_rejected_with_a_reason() -> None:
    with pytest.raises(FeedbackRejectedError, match="Unknown event: NOPE"):
        apply_feedback(Feedback(event_id="NOPE", type="return"), None)


def test_feedback_on_a_non_delivery_event_is_rejected() -> None:
    with pytest.raises(FeedbackRejectedError, match="not a delivery"):
        apply_feedback(Feedback(event_id="E", type="return"), {"type": "filter.passed"})


def test_malformed_feedback_is_rejected_with_the_field() -> None:
    with pytest.raises(
        FeedbackRejectedError, match="type: Input should be 'conversion' or 'return'"
    ):
        parse_feedback(b'{"event_id": "E", "type": "sold"}')


@pytest.mark.stack
def test_feedback_posted_over_http_flows_to_events_and_the_leads_revenue(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    # A feedback topic of its own: another test's feedback worker must not take this one's.
    settings = Settings(db_schema=unique_id, feedback_topic=f"leadflow.{unique_id}.feedback")
    migrate_database(settings)
    flow = make_flow(unique_id, buyer.url)
    prepare_topics(stack, flow)
    stop = threading.Event()
    runners = [build_step_loop(stack, flow, s.id).run for s in flow.steps]
    runners.append(
        TimelineProjector(settings, rf"^leadflow\.{unique_id}\.events\..+$", unique_id).run
    )
    runners.append(build_feedback_loop(settings, TimelineDeliveries(settings)).run)
    threads = [threading.Thread(target=r, args=(stop,), daemon=True) for r in runners]
    for t in threads:
        t.start()
    try:
        [lead_id] = publish_leads(stack, flow.id, [LEAD])
        delivered = wait_for(stack, flow, lead_id, "recipient.delivered")
        with connect(settings) as conn:
            wait_until(
                lambda: conn.execute("SELECT 1 FROM events WHERE id = %s", (delivered,)).fetchone(),
                17,
                "the delivery in the timeline projection",
                every=0.5,
            )
        answer = admin_client(create_app(settings)).post(
            "/feedback",
            params={"event_id": delivered},
            json={"type": "return", "reason": "Wrong number"},
        )
        assert answer.status_code == 202, answer.text
        publish_feedback(settings, orjson.dumps({"event_id": "UNKNOWN", "type": "conversion"}))
        wait_for(stack, flow, lead_id, "feedback.processed")
        with connect(settings) as conn:
            row = wait_until(
                lambda: conn.execute(
                    "SELECT revenue, last_event_type FROM leads WHERE lead_id = %s", (lead_id,)
                ).fetchone(),
                15,
                "the lead's row to show the processed feedback",
                until=lambda row: bool(row and row[1] == "feedback.processed"),
                every=0.5,
            )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{unique_id}" CASCADE')
    timeline = events_by_lead(read_events(stack, flow))[lead_id]
    assert [e["type"] for e in timeline][-2:] == ["feedback.received", "feedback.processed"]
    assert timeline[-2]["vars"]["feedback.recipient_event_id"] == delivered
    assert timeline[-1]["revenue"] == 0.0
    assert row == (0.0, "feedback.processed")
    rejected = read_topic(stack, rejected_topic(settings.feedback_topic), unique_id)
    assert b"Unknown event: UNKNOWN" in [dict(h).get("leadflow-error") for h in rejected]


def wait_for(stack: Settings, flow: object, lead_id: str, type_: str) -> str:
    """The id of the lead's first ``type_`` event, once it is on the topics."""

    def found() -> str:
        timeline = events_by_lead(read_events(stack, flow, 5)).get(lead_id, [])  # type: ignore[arg-type]
        return next((str(e["id"]) for e in timeline if e["type"] == type_), "")

    return wait_until(found, 45, f"{type_} of lead {lead_id}", every=0.5)


def read_topic(stack: Settings, topic: str, group: str) -> list[list[tuple[str, bytes]]]:
    consumer = Consumer(consumer_config(stack, f"{group}-reader", **{"enable.partition.eof": True}))
    consumer.subscribe([topic])
    out: list[Any] = []

    def unknown_seen() -> bool:
        for msg in consumer.consume(100, timeout=0.5):
            if not msg.error():
                out.append(list(msg.headers() or []))
        return any(b"UNKNOWN" in (v or b"") for h in out for _, v in h)

    try:
        wait_until(unknown_seen, 10, f"the refused feedback on {topic}", every=0)
    finally:
        consumer.close()
    return out


class _Message:
    """The parts of a Kafka message the feedback handler reads."""

    def __init__(self, value: bytes, offset: int, published_ms: int) -> None:
        self._value, self._offset, self._ms = value, offset, published_ms

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"lead"

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "leadflow.feedback"

    def partition(self) -> int:
        return 0

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ms)


def test_a_leads_second_feedback_follows_the_first_on_its_timeline() -> None:
    """Feedback events sort in the order they were given (not by a hash of where the message
    sat), and each one's snapshot continues from the lead's latest state."""
    steps = make_lead_events(flow_id="f", submitted_ms=1_764_000_000_000)
    delivery = steps[3]
    timeline: list[dict[str, Any]] = list(steps)

    class Deliveries:
        def find(self, event_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            return delivery, list(timeline)

        def close(self) -> None:
            pass

    handler = FeedbackHandler(Settings(), TopicCodecs(Settings()), Deliveries())
    codec = default_codec()
    answers = []
    # The return comes first, the conversion a minute later, at a lower offset modulo 2^15
    # (and under the old hash either order was as likely).
    for kind, offset, at in (
        ("return", 40_000, 1_764_000_100_000),
        ("conversion", 5, 1_764_000_160_000),
    ):
        body = orjson.dumps({"event_id": delivery["id"], "type": kind})
        records = handler.handle(_Message(body, offset, at))  # type: ignore[arg-type]
        events = [codec.decode(r.value) for r in records]
        timeline.extend(events)
        answers.append(events)
    (returned_received, returned_processed), (converted_received, _) = answers
    ids = [e["id"] for e in timeline]
    assert ids == sorted(ids)
    assert returned_processed["vars"]["totals.revenue"] == 0.0
    # The conversion's snapshot continues after the return: the revenue stays taken back.
    assert converted_received["vars"]["totals.revenue"] == 0.0
    assert converted_received["vars"]["feedback.type"] == "conversion"
    assert "totals.revenue" not in returned_received["vars"]  # as the delivery left it


def test_feedback_events_carry_the_flow_context_of_the_delivery_they_are_about() -> None:
    steps = make_lead_events(flow_id="f", submitted_ms=1_764_000_000_000)
    limits = [{"id": "ping:flow/f:day@UTC", "name": None, "maximum": 9, "duration": "day",
               "time_zone": "UTC", "reached": None}]  # fmt: skip
    delivery = {**steps[3], "firehose": {"destinations": ["archive"]}, "flow_ping_limits": limits}

    class Deliveries:
        def find(self, event_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            return delivery, [*steps[:3], delivery, steps[4]]

        def close(self) -> None:
            pass

    handler = FeedbackHandler(Settings(), TopicCodecs(Settings()), Deliveries())
    body = orjson.dumps({"event_id": delivery["id"], "type": "conversion"})
    records = handler.handle(_Message(body, 7, 1_764_000_100_000))  # type: ignore[arg-type]
    events = [default_codec().decode(r.value) for r in records]
    assert [e["firehose"] for e in events] == [{"destinations": ["archive"]}] * 2
    assert [e["flow_ping_limits"] for e in events] == [limits] * 2
    assert events[1]["metrics_changed"] == ["converted"]
