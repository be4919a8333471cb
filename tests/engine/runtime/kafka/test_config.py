"""The consumer's static instance id: stable for the same topics, new when they change."""

from __future__ import annotations

from engine.runtime.kafka.config import static_instance_id


def test_the_same_topics_in_any_order_keep_the_instance_id() -> None:
    first = static_instance_id("g.host.0", ["a.events", "a.retry"])
    assert first == static_instance_id("g.host.0", ["a.retry", "a.events"])
    assert first.startswith("g.host.0.")


def test_other_topics_or_another_member_get_another_instance_id() -> None:
    """A worker whose input moved must join as a new member (KAFKA-12759: a static member
    rejoining with other topics keeps its old assignment)."""
    base = static_instance_id("g.host.0", ["a.events"])
    assert base != static_instance_id("g.host.0", ["b.events"])
    assert base != static_instance_id("g.host.0", ["a.events", "a.retry"])
    assert base != static_instance_id("g.host.1", ["a.events"])
