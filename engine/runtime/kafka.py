"""librdkafka configuration for each role, with librdkafka's own key names."""

from __future__ import annotations

import argparse
from typing import Any

from confluent_kafka import KafkaError

from engine.settings import Settings


def is_fatal(err: KafkaError) -> bool:
    """The consumer cannot go on: exit, so the supervisor starts another.

    A static member fenced by its own instance id (after a broker failure, or a
    restarted twin) reaches ``consume``/``commit`` with code ``_FATAL`` but
    ``fatal()`` False (librdkafka flags only the client's own fatal error); a loop
    that only logged it kept a live process that consumed nothing.
    """
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Only committed transactions: an aborted step attempt must never reach
        # the next step, the projector or the streamer.
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.wait.max.ms": 50,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "topic.metadata.refresh.interval.ms": 5_000,
        **overrides,
    }


def transactional_producer_config(settings: Settings, transactional_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "transactional.id": transactional_id,
        # A worker killed inside a transaction blocks read_committed readers of
        # its partitions until this expires or its successor fences it.
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        "linger.ms": 5,
        "compression.type": "lz4",
        "enable.idempotence": True,
    }


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "linger.ms": 10,
        "compression.type": "lz4",
        "enable.idempotence": True,
        "acks": "all",
        **overrides,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap_servers}


def librdkafka_property(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from a command line (``-X group.instance.id=w1``): an argparse type."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value
