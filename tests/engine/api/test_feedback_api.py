"""POST /feedback: known deliveries are accepted and published, unknown ones refused at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from pydantic import SecretStr

from engine.api import feedback
from engine.api.app import create_app
from engine.runtime.feedback_worker import ensure_feedback_topics
from engine.runtime.kafka.config import consumer_config
from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.generations import migrate_database
from projectors.store import connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events
from tests.keys import admin_client

pytestmark = pytest.mark.stack


@pytest.fixture
def settings_with_a_delivery(stack: Settings, unique_id: str) -> Iterator[tuple[Settings, dict]]:  # type: ignore[type-arg]
    settings = stack.model_copy(
        update={"db_schema": unique_id, "feedback_topic": f"leadflow.{unique_id}.feedback"}
    )
    migrate_database(settings)
    codec = EventCodec()
    # Delivered now: feedback is taken within the return window (feedback_return_days).
    events = make_lead_events(flow_id=unique_id, submitted_ms=int(time.time() * 1000))
    records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(events)]
    with connect(settings) as conn:
        write_batch(conn, "test", build_batch(codec, records))
    yield settings, events[3]  # recipient.delivered
    with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{unique_id}" CASCADE')


def test_feedback_on_a_delivery_is_accepted_and_published(
    settings_with_a_delivery: tuple[Settings, dict],  # type: ignore[type-arg]
) -> None:
    settings, delivered = settings_with_a_delivery
    ensure_feedback_topics(settings)
    consumer = Consumer(
        consumer_config(settings, f"api-test-{delivered['id']}", **{"auto.offset.reset": "latest"})
    )
    consumer.subscribe([settings.feedback_topic])
    consumer.consume(1, timeout=5)  # join the group before publishing
    client = admin_client(create_app(settings))
    answer = client.post(
        "/feedback",
        params={"event_id": delivered["id"]},
        json={"type": "return", "reason": "Bad number"},
    )
    assert answer.status_code == 202
    assert answer.json()["lead_id"] == delivered["lead_id"]
    found = []
    for _ in range(20):
        found += [
            m
            for m in consumer.consume(10, timeout=0.5)
            if not m.error() and m.key() == delivered["lead_id"].encode()
        ]
        if found:
            break
    consumer.close()
    assert len(found) == 1
    assert b'"type":"return"' in (found[0].value() or b"")


def test_feedback_on_an_unknown_event_is_refused_with_the_reason(
    settings_with_a_delivery: tuple[Settings, dict],  # type: ignore[type-arg]
) -> None:
    settings, _ = settings_with_a_delivery
    answer = admin_client(create_app(settings)).post(
        "/feedback", params={"event_id": "NOPE"}, json={"type": "conversion"}
    )
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Unknown event: NOPE"}


def test_malformed_feedback_is_a_clear_422(
    settings_with_a_delivery: tuple[Settings, dict],  # type: ignore[type-arg]
) -> None:
    settings, delivered = settings_with_a_delivery
    answer = admin_client(create_app(settings)).post(
        "/feedback", params={"event_id": delivered["id"]}, json={"type": "sold"}
    )
    assert answer.status_code == 422
    assert "conversion" in answer.text


def test_feedback_on_an_event_that_is_no_delivery_is_a_422_in_the_validation_shape(
    settings_with_a_delivery: tuple[Settings, dict],  # type: ignore[type-arg]
) -> None:
    settings, delivered = settings_with_a_delivery
    client = admin_client(create_app(settings))
    submitted = client.get(f"/leads/{delivered['lead_id']}/events").json()[0]["id"]
    answer = client.post("/feedback", params={"event_id": submitted}, json={"type": "return"})
    assert answer.status_code == 422
    assert answer.json() == {
        "detail": [
            {
                "type": "value_error",
                "loc": ["query", "event_id"],
                "msg": f"Event {submitted} is a source.submitted, not a delivery to a buyer"
                " (recipient.*): feedback is on a delivery",
                "input": submitted,
            }
        ]
    }


def test_feedback_while_postgres_or_kafka_is_unavailable_is_a_503(
    settings_with_a_delivery: tuple[Settings, dict],  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, delivered = settings_with_a_delivery
    down = settings.model_copy(
        update={"database_url": SecretStr("postgresql://leadflow:x@127.0.0.1:9/leadflow")}
    )
    body, params = {"type": "return"}, {"event_id": delivered["id"]}
    answer = admin_client(create_app(down)).post("/feedback", params=params, json=body)
    assert (answer.status_code, answer.json()) == (
        503,
        {"detail": "The event store is unavailable; retry later"},
    )

    def kafka_down(*args: object) -> None:
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "feedback not published"))

    monkeypatch.setattr(feedback, "publish_feedback", kafka_down)
    answer = admin_client(create_app(settings)).post("/feedback", params=params, json=body)
    assert (answer.status_code, answer.json()) == (
        503,
        {"detail": "Kafka is unavailable; the feedback was not taken"},
    )
