"""A static member of a regex subscription reads the topics created while it was down
(``new_pattern_consumer``; a static member rejoining with more topics keeps its old
assignment: KAFKA-12759). Needs the stack's broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from engine.runtime.kafka.clients import new_pattern_consumer, new_producer
from engine.runtime.kafka.topics import TopicSpec, ensure_topics
from engine.settings import Settings
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


def _topic(stack: Settings, admin: AdminClient, name: str) -> None:
    ensure_topics(admin, [TopicSpec(name, 3, 1)])
    producer = new_producer(stack)
    for i in range(9):
        producer.produce(name, b"x", str(i).encode())
    assert producer.flush(15) == 0


def _member_reads(stack: Settings, group: str, pattern: str, topic: str, timeout: float) -> None:
    """A static member (one operator-given id) of ``group`` reads ``topic``'s 9 records,
    then closes - leaving no LeaveGroup (static members do not): its session runs on."""
    member = {"group.instance.id": f"{group}-1"}
    consumer = new_pattern_consumer(stack, group, pattern, **member)
    consumer.subscribe([pattern])
    seen = 0

    def more() -> int:
        nonlocal seen
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None and msg.topic() == topic:
            seen += 1
        return seen

    try:
        wait_until(more, timeout, f"9 records of {topic}", until=lambda n: n >= 9, every=0)
    finally:
        consumer.close()


def test_a_static_member_restarted_reads_the_topics_created_while_it_was_down(
    stack: Settings, admin: AdminClient, unique_id: str
) -> None:
    pattern = rf"^leadflow\.{unique_id}\.events\..+$"
    group = f"leadflow.{unique_id}.reader"
    first, later = f"leadflow.{unique_id}.events.a", f"leadflow.{unique_id}.events.b"
    _topic(stack, admin, first)
    _member_reads(stack, group, pattern, first, 30)
    _topic(stack, admin, later)
    # Once the old member's session (10 s) has run out. Under the operator's bare id it was
    # handed the old assignment and read none of the new topic, for good.
    _member_reads(stack, group, pattern, later, 45)
