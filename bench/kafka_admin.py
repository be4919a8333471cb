"""Topics the bench creates for itself, and removing them when the run ends."""

from __future__ import annotations

import contextlib

from confluent_kafka import KafkaException

from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.settings import Settings


def create_topics(settings: Settings, topics: list[str], partitions: int) -> None:
    """The bench's topics (replication 1), ready once every partition has a leader."""
    ensure_topics(new_admin(settings), [TopicSpec(t, partitions, 1) for t in topics])


def delete_topics(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns their names."""
    admin = new_admin(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):  # already gone: nothing to clean
                future.result()
    return names
