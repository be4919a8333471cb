"""Topics the bench creates for itself, and removing them when the run ends."""

from __future__ import annotations

import contextlib

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from engine.runtime.kafka.config import admin_config
from engine.settings import Settings


def create_topics(settings: Settings, topics: list[str], partitions: int) -> None:
    admin = AdminClient(admin_config(settings))
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


def delete_topics(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns their names."""
    admin = AdminClient(admin_config(settings))
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):  # already gone: nothing to clean
                future.result()
    return names
