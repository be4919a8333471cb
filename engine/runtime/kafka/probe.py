"""The one probe that tells a command "Kafka is not reachable" before it waits out
librdkafka's timeouts, and librdkafka's own log lines routed through structlog."""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from engine.errors import KafkaUnreachableError
from engine.runtime.kafka.config import LIBRDKAFKA_LOGGER, admin_config
from engine.settings import Settings

log = structlog.get_logger(__name__)

# Long enough for a broker across a slow network to answer a metadata request; short
# enough that a command with nothing to talk to says so at once. A refused connection
# or an unknown host ends the probe sooner (librdkafka reports "all brokers down").
PROBE_TIMEOUT_S = 5.0


def require_kafka(settings: Settings, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``KafkaUnreachableError`` unless a broker answers a cluster description within
    ``timeout`` seconds; returns at once when one does, and sooner than ``timeout`` when
    librdkafka finds every bootstrap server refusing or unresolvable."""
    errors: list[KafkaError] = []
    config: dict[str, Any] = {
        **admin_config(settings),
        "logger": LIBRDKAFKA_LOGGER,
        "error_cb": errors.append,
    }
    admin = AdminClient(config)
    servers = settings.kafka_bootstrap_servers
    future = admin.describe_cluster(request_timeout=timeout)
    deadline = time.monotonic() + timeout
    while not future.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaUnreachableError(servers, _probe_cause(errors, timeout))
        if any(e.code() == KafkaError._ALL_BROKERS_DOWN for e in errors):
            raise KafkaUnreachableError(servers, _probe_cause(errors, None))
        admin.poll(min(0.1, remaining))  # serves error_cb
    try:
        future.result()
    except KafkaException as exc:
        raise KafkaUnreachableError(servers, _probe_cause([exc.args[0]], timeout)) from None


def _probe_cause(errors: list[KafkaError], timeout: float | None) -> str:
    """The first connection error, without librdkafka's broker prefix and state suffix;
    ``timeout`` None: every broker is down and librdkafka said nothing more."""
    for err in errors:
        if err.code() != KafkaError._ALL_BROKERS_DOWN:
            text = re.sub(r"^\S+/\S+: ", "", err.str())
            return re.sub(r" \(after \d+ms in state \w+\)$", "", text)
    if timeout is None:
        # What a plaintext client hears from a TLS listener (librdkafka logs it at info
        # level only): the broker drops the connection at the first request.
        return (
            "every broker closed the connection: does LEADFLOW_KAFKA_SECURITY_PROTOCOL "
            "match the listener's?"
        )
    return f"no answer within {timeout:g} s"
