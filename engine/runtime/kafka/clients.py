"""Every librdkafka client leadflow opens, built here from the settings (and per-use overrides).

One place constructs clients so that every consumer gets the engine's
guarantees (read_committed, manual offsets, cooperative rebalancing), every
producer its durability (idempotent, ``acks=all``) and every client the same
log routing, whoever opens it; ``config.py`` holds the configurations
themselves, with librdkafka's own key names so that any librdkafka option
passes through as an override without a translation table.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from engine.runtime.kafka.config import (
    admin_config,
    consumer_config,
    producer_config,
    static_instance_id,
    transactional_producer_config,
)
from engine.runtime.kafka.transaction import MeteredProducer, TransactionMetrics
from engine.settings import Settings

log = structlog.get_logger(__name__)

# How long a pattern consumer with a static id waits for the topic list at start.
LIST_TOPICS_TIMEOUT_S = 15.0


def new_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A read_committed consumer in ``group_id`` that commits only what it is told to.

    Assign-only readers (no ``subscribe``) still need a group id; they never join it
    and never commit, so it does not appear on the broker."""
    return Consumer(consumer_config(settings, group_id, **overrides))


def new_pattern_consumer(
    settings: Settings, group_id: str, pattern: str, **overrides: Any
) -> Consumer:
    """``new_consumer`` for a regex subscription to ``pattern``. A static member id given
    as an override (an operator's ``-X group.instance.id=projector-1``) is suffixed with
    the topics the pattern matches now (``static_instance_id``).

    A static member restarted with more matching topics than it had (a flow applied, a step
    added, while it was down) is handed its old assignment and no rebalance (KAFKA-12759),
    and librdkafka never notices: the new topics were never read (checked on the stack's
    broker: none of a new topic's records in 40 s). Topics created while it runs are not
    affected: the running member rejoins under its own member id, which rebalances. The
    cost: a restart after new topics waits out the old member's session once. A broker
    that cannot list its topics now: the consumer joins as a dynamic member (it would wait
    for the broker either way), never under an id that may name other topics."""
    member = overrides.get("group.instance.id")
    if member:
        overrides = dict(overrides)
        try:
            topics = new_admin(settings).list_topics(timeout=LIST_TOPICS_TIMEOUT_S).topics
        except KafkaException as exc:
            del overrides["group.instance.id"]
            log.warning(
                "topics not listed: joining as a dynamic member",
                group=group_id,
                error=str(exc.args[0]),
            )
        else:
            regex = re.compile(pattern)
            matching = sorted(t for t in topics if regex.search(t))
            overrides["group.instance.id"] = static_instance_id(str(member), matching)
    return new_consumer(settings, group_id, **overrides)


def new_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer with ``acks=all``: a record it reports delivered is durable."""
    return Producer(producer_config(settings, **overrides))


def new_transactional_producer(
    settings: Settings, transactional_id: str, metrics: TransactionMetrics | None = None
) -> Producer:
    """A transactional producer for ``transactional_id`` (call ``init_transactions`` before
    the first transaction). With ``metrics``, its commits are timed and its aborts counted;
    ``produce`` stays librdkafka's own method either way (the hot path is not wrapped)."""
    config = transactional_producer_config(settings, transactional_id)
    if metrics is None:
        return Producer(config)
    return MeteredProducer(config, metrics)


def new_admin(settings: Settings) -> AdminClient:
    """An admin client (topics, offsets, consumer groups)."""
    return AdminClient(admin_config(settings))
