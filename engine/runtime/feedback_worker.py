"""The feedback worker: the feedback topic in, feedback events out, exactly once."""

from __future__ import annotations

import threading

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine.errors import LeadflowError
from engine.runtime.handlers.feedback import FeedbackHandler, rejected_topic
from engine.runtime.kafka import admin_config, consumer_config, transactional_producer_config
from engine.runtime.worker import TransactionalStepLoop
from engine.settings import Settings
from engine.steps.feedback import Feedback, FeedbackRejectedError, apply_feedback, parse_feedback
from schemas.codec import default_codec

log = structlog.get_logger(__name__)


class FeedbackRefusedError(LeadflowError):
    """Feedback the worker would reject, refused before it is published."""


def parse_or_refuse(body: bytes) -> Feedback:
    """``body`` as the worker will read it, or ``FeedbackRefusedError`` with the worker's reason."""
    try:
        return parse_feedback(body)
    except FeedbackRejectedError as exc:
        raise FeedbackRefusedError(str(exc)) from None


def check_feedback(settings: Settings, feedback: Feedback) -> str:
    """Refuse feedback on an event the worker would reject it for (unknown to the timeline
    projection, or not a delivery), with the same reason, by the same decision
    (``apply_feedback``): otherwise it is published, "accepted", and only shows up later on
    ``leadflow.feedback.rejected``. Returns the delivery's lead id: the feedback's key, so a
    lead's feedback shares a partition and is applied in the order it was given."""
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
    assert delivery is not None  # apply_feedback refuses an unknown event
    return str(delivery["lead_id"])


def ensure_feedback_topics(settings: Settings, partitions: int = 3) -> None:
    admin = AdminClient(admin_config(settings))
    existing = admin.list_topics(timeout=10).topics
    topics = (settings.feedback_topic, rejected_topic(settings.feedback_topic))
    wanted = [t for t in topics if t not in existing]
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
    group, rejected = settings.feedback_topic, rejected_topic(settings.feedback_topic)
    return TransactionalStepLoop(
        # The group is named after the topic: each deployment's feedback its own.
        Consumer(consumer_config(settings, group)),
        Producer(transactional_producer_config(settings, f"{group}.{settings.instance_id}")),
        FeedbackHandler(settings, default_codec()),
        input_topic=group,
        output_topic=rejected,  # every record names its topic; this is a fallback
        dlq_topic=rejected,
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
    producer.produce(settings.feedback_topic, body, key)
    if producer.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "feedback not published"))
