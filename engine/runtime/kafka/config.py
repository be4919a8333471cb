"""librdkafka configuration for each role, with librdkafka's own key names, and which of its
errors end a worker (and which only mean "ask again in a moment")."""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Iterable
from typing import Any

import structlog
from confluent_kafka import KafkaError

from engine.settings import Settings
from engine.transport import kafka_security

log = structlog.get_logger(__name__)


class _ToStructlog(logging.Handler):
    """librdkafka's log lines (confluent-kafka hands them to a ``logging.Logger``) as
    structlog debug events. A command reports what failed itself, in one line; a page of
    "Connect to ... failed" lines on its stderr says nothing more and buries that line.
    ``LEADFLOW_LOG_LEVEL=DEBUG`` shows them."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("librdkafka", client_level=record.levelname.lower(), message=record.getMessage())


LIBRDKAFKA_LOGGER = logging.getLogger("leadflow.librdkafka")
LIBRDKAFKA_LOGGER.addHandler(_ToStructlog())
LIBRDKAFKA_LOGGER.setLevel(logging.DEBUG)
LIBRDKAFKA_LOGGER.propagate = False

# Added to every client configuration below; empty (librdkafka logs to stderr, as
# workers want for their logs) until a short-lived command calls ``route_client_logs``.
_client_logging: dict[str, Any] = {}


def route_client_logs() -> None:
    """Send the log lines of every Kafka client created from now on in this process to
    structlog at debug level (the CLI's commands; not workers, whose logs keep them)."""
    _client_logging["logger"] = LIBRDKAFKA_LOGGER


def is_fatal(err: KafkaError) -> bool:
    """The consumer cannot go on: exit, so the supervisor starts another.

    A static member fenced by its own instance id (after a broker failure, or a
    restarted twin) reaches ``consume``/``commit`` with code ``_FATAL`` but
    ``fatal()`` False (librdkafka flags only the client's own fatal error); a loop
    that only logged it kept a live process that consumed nothing.
    """
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


# What a partition answers while its leader is moving or not ready yet (a topic just
# created, a broker restarting, a client whose metadata is a step behind): worth asking
# again in a moment, not an error.
LEADER_NOT_READY = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.OFFSET_NOT_AVAILABLE,
    }
)


def connection_config(settings: Settings) -> dict[str, Any]:
    """Where the brokers are and how to reach them (TLS, SASL): the start of every client's
    configuration, so no client - worker, projector, streamer, CLI or harness - connects
    any other way. ``ConfigError`` (one line) for transport settings that cannot work.

    The dict holds the SASL password for librdkafka: hand it to a client, never to a log."""
    security = kafka_security(settings)
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": security.protocol.lower(),
    }
    if security.protocol in ("SSL", "SASL_SSL"):
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if security.verify_hostname else "none"
        )
        for key, value in (
            ("ssl.ca.location", security.ca_location),
            ("ssl.certificate.location", security.certificate_location),
            ("ssl.key.location", security.key_location),
        ):
            if value is not None:
                config[key] = value
    if security.mechanism is not None:
        assert security.password is not None  # kafka_security checked it
        config["sasl.mechanism"] = security.mechanism
        config["sasl.username"] = security.username
        config["sasl.password"] = security.password.get_secret_value()
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        **connection_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Only committed transactions: an aborted step attempt must never reach
        # the next step, the projector or the streamer.
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # A fetch the broker holds for new data: a lead's every hop can wait this long
        # behind a transaction's commit marker (e2e quick bench: p50 228 -> 169 ms, p99
        # 566 -> 446 ms going from 50 to 10), at the cost of more idle fetch requests.
        "fetch.wait.max.ms": 10,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "topic.metadata.refresh.interval.ms": 5_000,
        **_client_logging,
        **overrides,
    }


def static_instance_id(member: str, topics: Iterable[str]) -> str:
    """A ``group.instance.id`` for ``member`` reading ``topics``: the same while it reads the
    same topics, so a restarted worker takes its partitions straight back (static
    membership), and a new one when they change.

    A static member that rejoins its group with other topics is handed its previous
    assignment without a rebalance (the classic protocol compares only the protocol's name
    on that path: KAFKA-12759, open). The Java client notices and rejoins; librdkafka keeps
    the partitions of topics it no longer reads and consumes nothing, for good - a step whose
    input moved in a new flow version (a step inserted before it) stalled. A changed set of
    topics joins as a new member instead: the old one, which left no LeaveGroup (static
    members do not), is dropped when its session times out, and the group rebalances."""
    digest = hashlib.sha256("\n".join(sorted(set(topics))).encode()).hexdigest()[:10]
    return f"{member}.{digest}"


def transactional_producer_config(settings: Settings, transactional_id: str) -> dict[str, Any]:
    return {
        **connection_config(settings),
        "transactional.id": transactional_id,
        # A worker killed inside a transaction blocks read_committed readers of
        # its partitions until this expires or its successor fences it.
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        "linger.ms": 5,
        "compression.type": "lz4",
        "enable.idempotence": True,
        **_client_logging,
    }


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        **connection_config(settings),
        "linger.ms": 10,
        "compression.type": "lz4",
        "enable.idempotence": True,
        "acks": "all",
        **_client_logging,
        **overrides,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    return {**connection_config(settings), **_client_logging}


def librdkafka_property(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from a command line (``-X group.instance.id=w1``): an argparse type."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value
