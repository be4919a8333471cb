"""The feedback worker: the feedback topic in, feedback events out, exactly once."""

from __future__ import annotations

import threading

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine.errors import LeadflowError
from engine.runtime.handlers.feedback import (
    FEEDBACK_REJECTED_TOPIC,
    FEEDBACK_TOPIC,
    FeedbackHandler,
)
from engine.runtime.kafka import admin_config, consumer_config, transactional_producer_config
from engine.runtime.worker import TransactionalStepLoop
from engine.settings import Settings
from engine.steps.feedback import Feedback, FeedbackRejectedError, apply_feedback, parse_feedback
from schemas.codec import default_codec

log = structlog.get_logger(__name__)
GROUP = "leadflow.feedback"


class FeedbackRefusedError(LeadflowError):
    """Feedback the worker would reject, refused before it is published."""


def parse_or_refuse(body: bytes) -> Feedback:
    """``body`` as the worker will read it, or ``FeedbackRefusedError`` with the worker's reason."""
    try:
        return parse_feedback(body)
    except FeedbackRejectedError as exc:
        raise FeedbackRefusedError(str(exc)) from None


def check_feedback(settings: Settings, feedback: Feedback) -> None:
    """Refuse feedback on an event the worker would reject it for (unknown to the timeline
    projection, or not a delivery), with the same reason, by the same decision
    (``apply_feedback``): otherwise it is published, "accepted", and only shows up later on
    ``leadflow.feedback.rejected``."""
    from projectors.queries import get_event
    from projectors.store import connect

    with connect(settings, application_name="leadflow-feedback-check") as conn:
        delivery = get_event(conn, feedback.event_id)
    try:
        apply_feedback(feedback, delivery)
    except FeedbackRejectedError as exc:
        raise FeedbackRefusedError(
            f"{exc} (not published; --no-check publishes it anyway, e.g. for an event "
            "the timeline projection has not caught up with)"
        ) from None


def ensure_feedback_topics(settings: Settings, partitions: int = 3) -> None:
    admin = AdminClient(admin_config(settings))
    existing = admin.list_topics(timeout=10).topics
    wanted = [t for t in (FEEDBACK_TOPIC, FEEDBACK_REJECTED_TOPIC) if t not in existing]
    if not wanted:
        return
    futures = admin.create_topics(
        [
            NewTopic(t, num_partitions=partitions, replication_factor=settings.topic_replication)
            for t in wanted
        ]
    )
    for future in futures.values():
        try:
            future.result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def build_feedback_loop(settings: Settings) -> TransactionalStepLoop:
    ensure_feedback_topics(settings)
    return TransactionalStepLoop(
        Consumer(consumer_config(settings, GROUP)),
        Producer(transactional_producer_config(settings, f"{GROUP}.{settings.instance_id}")),
        FeedbackHandler(settings, default_codec()),
        input_topic=FEEDBACK_TOPIC,
        output_topic=FEEDBACK_REJECTED_TOPIC,  # every record names its topic; this is a fallback
        dlq_topic=FEEDBACK_REJECTED_TOPIC,
        batch_size=settings.batch_size,
        commit_interval_ms=settings.commit_interval_ms,
        commit_linger_ms=settings.commit_linger_ms,
    )


def run_feedback(settings: Settings, stop: threading.Event) -> None:
    loop = build_feedback_loop(settings)
    log.info("feedback worker started")
    loop.run(stop)
    log.info("feedback worker stopped", processed=loop.processed)


def publish_feedback(settings: Settings, body: bytes, key: bytes | None = None) -> None:
    """What the HTTP endpoint and ``leadflow feedback`` do: put one feedback on the topic."""
    from engine.runtime.kafka import producer_config

    ensure_feedback_topics(settings)
    producer = Producer(producer_config(settings))
    producer.produce(FEEDBACK_TOPIC, body, key)
    if producer.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "feedback not published"))
