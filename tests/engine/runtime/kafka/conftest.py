"""Fixtures of the Kafka kit's tests on the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from engine.runtime.kafka.clients import new_admin, new_transactional_producer
from engine.runtime.kafka.offsets import list_offsets
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.settings import Settings
from tests.waiting import wait_until

# Records the ``topic`` fixture writes in one transaction.
RECORDS = 5


@pytest.fixture
def admin(stack: Settings) -> AdminClient:
    return new_admin(stack)


@pytest.fixture
def topic(stack: Settings, admin: AdminClient, unique_id: str) -> str:
    """One partition holding RECORDS records written in one transaction: offsets 0-4, the
    commit marker at 5, the end at 6."""
    name = f"leadflow.{unique_id}.kit"
    ensure_topics(admin, [TopicSpec(name, 1, 1)])
    producer = new_transactional_producer(stack, f"{name}.writer")
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(RECORDS):
        producer.produce(name, f"v{i}".encode(), b"k")
    producer.commit_transaction()
    settle(admin, name, RECORDS + 1)
    return name


def settle(admin: AdminClient, topic: str, end: int) -> None:
    """Wait for a transaction's marker: the coordinator writes it after the commit or abort
    returns, and until then the last stable offset is where the transaction began."""
    tp = (topic, 0)
    wait_until(
        lambda: list_offsets(admin, [tp], "latest") == {tp: end}, 30, f"{topic} to end at {end}"
    )
