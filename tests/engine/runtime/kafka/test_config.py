"""The consumer's static instance id: stable for the same topics, new when they change.
No broker: the one test that needs one finds none."""

from __future__ import annotations

from typing import Any

import pytest

from engine.runtime.kafka import clients
from engine.runtime.kafka.config import static_instance_id
from engine.settings import Settings


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


def test_a_static_pattern_member_joins_as_a_dynamic_one_when_topics_cannot_be_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Never under an id that may name other topics: without the topic list, no static id."""
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(clients, "LIST_TOPICS_TIMEOUT_S", 0.5)
    monkeypatch.setattr(clients, "new_consumer", lambda _s, _g, **o: made.append(o))
    nowhere = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    member = {"group.instance.id": "projector-1", "fetch.wait.max.ms": 50}
    clients.new_pattern_consumer(nowhere, "g", r"^leadflow\..+", **member)
    assert made == [{"fetch.wait.max.ms": 50}]
