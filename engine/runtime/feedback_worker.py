"""The feedback worker: the feedback topic in, feedback events out, exactly once."""

from __future__ import annotations

import threading

import structlog
from confluent_kafka import KafkaError, KafkaException

from engine.runtime.handlers.feedback import Deliveries, FeedbackHandler, rejected_topic
from engine.runtime.kafka.clients import (
    new_admin,
    new_consumer,
    new_producer,
    new_transactional_producer,
)
from engine.runtime.kafka.metrics import WorkerMetrics
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.runtime.schema_registry import TopicCodecs
from engine.runtime.step_loop import TransactionalStepLoop
from engine.settings import Settings

log = structlog.get_logger(__name__)


def ensure_feedback_topics(settings: Settings, partitions: int = 3) -> None:
    topics = (settings.feedback_topic, rejected_topic(settings.feedback_topic))
    ensure_topics(
        new_admin(settings),
        [TopicSpec(t, partitions, settings.topic_replication) for t in topics],
        timeout=10.0,  # the feedback API answers 503 after this when Kafka is away
    )


def build_feedback_loop(settings: Settings, deliveries: Deliveries) -> TransactionalStepLoop:
    ensure_feedback_topics(settings)
    group, rejected = settings.feedback_topic, rejected_topic(settings.feedback_topic)
    metrics = WorkerMetrics("feedback")
    return TransactionalStepLoop(
        # The group is named after the topic: each deployment's feedback its own.
        new_consumer(settings, group),
        new_transactional_producer(settings, f"{group}.{settings.instance_id}", metrics),
        FeedbackHandler(settings, TopicCodecs(settings), deliveries),
        input_topic=group,
        output_topic=rejected,  # every record names its topic; this is a fallback
        dlq_topic=rejected,
        batch_size=settings.batch_size,
        commit_interval_ms=settings.commit_interval_ms,
        commit_linger_ms=settings.commit_linger_ms,
        metrics=metrics,
    )


def run_feedback(settings: Settings, stop: threading.Event, deliveries: Deliveries) -> None:
    loop = build_feedback_loop(settings, deliveries)
    log.info("feedback worker started")
    loop.run(stop)
    log.info("feedback worker stopped", processed=loop.processed)


def publish_feedback(settings: Settings, body: bytes, key: bytes | None = None) -> None:
    """What the HTTP endpoint and ``leadflow feedback`` do: put one feedback on the topic."""
    ensure_feedback_topics(settings)
    producer = new_producer(settings)
    producer.produce(settings.feedback_topic, body, key)
    if producer.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "feedback not published"))
