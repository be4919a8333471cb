"""The steps on a real broker: each lead gets exactly the events its data calls for."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Consumer

from engine.demo.buyer import BuyerServer
from engine.ops.submit import publish_leads
from engine.runtime.kafka.config import consumer_config
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import dlq_topic, events_topic
from tests.factories import make_flow
from tests.kafka_helpers import events_by_lead, read_events, run_steps, wait_for_completion
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

GOOD = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone_1": "(512) 555-0123",
    "state": "TX",
    "tcpa_consent": True,
}
DELIVERED = [
    "source.submitted",
    "source.accepted",
    "filter.passed",
    "recipient.delivered",
    "flow.completed",
]
CASES: dict[str, tuple[object, list[str], str | None]] = {
    "delivered": ({**GOOD, "email": "ada@example.com"}, DELIVERED, None),
    "buyer_rejects": (
        {**GOOD, "email": "ada+reject@example.com"},
        [*DELIVERED[:3], "recipient.failed", "flow.completed"],
        "Duplicate lead",
    ),
    "buyer_fails": (
        {**GOOD, "email": "ada+error@example.com"},
        [*DELIVERED[:3], "recipient.error", "flow.completed"],
        "Buyer answered HTTP 500",
    ),
    "out_of_area": (
        {**GOOD, "email": "wy@example.com", "state": "WY"},
        ["source.submitted", "source.accepted", "filter.failed", "flow.completed"],
        "Service area: lead.state is 'WY'",
    ),
    "missing_email": (
        GOOD,
        ["source.submitted", "source.rejected", "flow.completed"],
        "Missing required field: email",
    ),
    "wrong_types": (
        {**GOOD, "email": 42, "tcpa_consent": "perhaps"},
        ["source.submitted", "source.rejected", "flow.completed"],
        "Invalid email: expected an email address, got int; "
        "Invalid tcpa_consent: expected true or false",
    ),
    "not_json": (
        '{"first_name": "Broken", ',
        ["source.submitted", "source.rejected", "flow.completed"],
        None,
    ),
}


def test_each_lead_gets_exactly_the_events_its_data_calls_for(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    flow = make_flow(unique_id, buyer.url)
    prepare_topics(stack, flow)
    stop = threading.Event()
    threads = run_steps(stack, flow, stop)
    try:
        names = list(CASES)
        ids = publish_leads(stack, flow.id, [CASES[n][0] for n in names])  # type: ignore[misc]
        wait_for_completion(stack, flow, len(ids))
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    timelines = events_by_lead(read_events(stack, flow))
    assert set(timelines) == set(ids)
    for name, lead_id in zip(names, ids, strict=True):
        _, expected_types, reason = CASES[name]
        timeline = timelines[lead_id]
        assert [e["type"] for e in timeline] == expected_types, name
        decisive = timeline[-2]
        if reason is not None:
            assert decisive["reason"] == reason, name
        assert timeline[-1]["reason"] == decisive["reason"], name
        assert [e["step_count"] for e in timeline][-1] == decisive["step_count"]
        assert all(e["flow_id"] == flow.id and e["lead_id"] == lead_id for e in timeline)
    # One delivery per lead that reached the buyer, with the event id as idempotency key.
    delivered = timelines[ids[names.index("delivered")]]
    assert delivered[3]["request"]["headers"]["Idempotency-Key"] == delivered[3]["id"]
    assert delivered[3]["revenue"] > 0
    assert delivered[-1]["outcome"] == "success"
    assert delivered[-1]["revenue"] == delivered[3]["revenue"]
    assert delivered[-1]["cost"] == 2.5
    assert sorted(buyer.received) == sorted(
        timelines[ids[names.index(n)]][3]["id"]
        for n in ("delivered", "buyer_rejects", "buyer_fails")
    )


def test_poison_event_goes_to_the_dead_letter_topic_and_the_step_goes_on(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    from confluent_kafka import Producer

    from engine.runtime.kafka.config import producer_config
    from engine.topics import HANDOFF_HEADER

    flow = make_flow(unique_id, buyer.url)
    prepare_topics(stack, flow)
    producer = Producer(producer_config(stack))
    # A hand-off record on the filter's input that is not an event at all.
    producer.produce(
        events_topic(flow.id, "source"), b"garbage", b"k", headers=[(HANDOFF_HEADER, b"1")]
    )
    producer.flush(10)
    stop = threading.Event()
    threads = run_steps(stack, flow, stop)
    try:
        publish_leads(stack, flow.id, [{**GOOD, "email": "after@example.com"}])
        wait_for_completion(stack, flow, 1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    consumer = Consumer(consumer_config(stack, f"{unique_id}-dlq-reader"))
    consumer.subscribe([dlq_topic(flow.id)])
    messages = wait_until(
        lambda: [m for m in consumer.consume(10, timeout=1) if not m.error()],
        15,
        "the dead letter",
        every=0,
    )
    consumer.close()
    assert len(messages) == 1
    headers = dict(messages[0].headers() or [])
    assert messages[0].value() == b"garbage"
    assert headers["leadflow-source-topic"] == events_topic(flow.id, "source").encode()
    assert headers["leadflow-error"].startswith(b"PoisonMessage: neither Avro")  # type: ignore[union-attr]
