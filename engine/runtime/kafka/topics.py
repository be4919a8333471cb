"""Creating topics, and waiting until every partition of them has a leader.

``create_topics`` returns once the controller has a topic, which can be before any
broker leads its partitions: offset lookups (replay, lag, watermarks) and the first
produce fail with NOT_LEADER_FOR_PARTITION until then. So a topic is ready only once
the cluster's metadata shows a leader for each of its partitions, and every creation
here waits for that. Several processes may create the same topics at once (workers
of one flow starting together): TOPIC_ALREADY_EXISTS is success, and those topics are
waited for too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from engine.flows import Flow
from engine.retention import flow_topic_retention
from engine.runtime.kafka.config import LEADER_NOT_READY

# confluent-kafka's OffsetSpec constructors are not annotated.
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: its name, partitions, replication and topic-level configs."""

    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)


def ensure_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet and wait for their leaders;
    returns the ones this call created (a concurrent creator's are waited for, not listed).
    Topics that already existed are left as they are."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [s for s in specs if s.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication,
                config=dict(s.config),
            )
            for s in wanted
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator won
                raise
    wait_for_leaders(admin, [s.name for s in wanted], timeout)
    return [s.name for s in wanted if s.name in created]


def wait_for_leaders(admin: AdminClient, topics: Sequence[str], timeout: float = 30.0) -> None:
    """Return once every partition of ``topics`` has a leader that answers: the cluster's
    metadata names one, and it answers a ListOffsets request for the partition (a
    broker's metadata can name the leader a moment before that broker has taken the
    partition on, and answers NOT_LEADER_FOR_PARTITION until it has). ``TimeoutError``
    naming the topics still without one after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pending = _unled(admin, topics, max(1.0, deadline - time.monotonic()))
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no leader after {timeout:.0f}s for partitions of {pending}")
        time.sleep(0.1)


def _unled(admin: AdminClient, topics: Sequence[str], timeout: float) -> list[str]:
    """The topics of which some partition has no leader answering yet."""
    metadata = admin.list_topics(timeout=timeout)
    pending = [
        t
        for t in topics
        if t not in metadata.topics
        or metadata.topics[t].error is not None
        or not metadata.topics[t].partitions
        or any(p.leader < 0 for p in metadata.topics[t].partitions.values())
    ]
    if pending:
        return pending
    parts = [(t, p) for t in topics for p in metadata.topics[t].partitions]
    futures = admin.list_offsets(
        {TopicPartition(t, p): _LATEST for t, p in parts}, request_timeout=timeout
    )
    unled = set()
    for tp, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() not in LEADER_NOT_READY:
                raise
            unled.add(tp.topic)
    return sorted(unled)


def flow_topic_specs(flow: Flow) -> list[TopicSpec]:
    """Every topic of ``flow`` (``engine.topics.flow_topics``), as its definition sizes them,
    each kept for the flow's retention (``engine.retention``)."""
    return [
        TopicSpec(name, flow.topics.partitions, flow.topics.replication, {"retention.ms": str(ms)})
        for name, ms in flow_topic_retention(flow).items()
    ]


def ensure_flow_topics(admin: AdminClient, flow: Flow, timeout: float = 30.0) -> list[str]:
    """Create the flow's topics that do not exist yet; returns the ones created."""
    return ensure_topics(admin, flow_topic_specs(flow), timeout)


# -- retention ------------------------------------------------------------------------------


def set_retention(
    admin: AdminClient, retention_ms: Mapping[str, int], timeout: float = 30.0
) -> dict[str, int]:
    """Set ``retention.ms`` of each existing topic of ``retention_ms`` whose value differs;
    returns the ones changed. Incremental (KIP-339): the topic's other configs stay as they
    are, unlike the legacy AlterConfigs that resets every config it is not given. Topics
    that do not exist are left alone (the next ``flow apply`` creates and sets them)."""
    current = topic_retention(admin, list(retention_ms), timeout)
    changed = {
        name: ms for name, ms in retention_ms.items() if name in current and current[name] != ms
    }
    if not changed:
        return {}
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry("retention.ms", str(ms), incremental_operation=AlterConfigOpType.SET)
            ],
        )
        for name, ms in changed.items()
    ]
    for future in admin.incremental_alter_configs(resources, request_timeout=timeout).values():
        future.result()
    return changed


def topic_retention(
    admin: AdminClient, topics: Sequence[str], timeout: float = 30.0
) -> dict[str, int | None]:
    """Each existing topic's ``retention.ms`` (None: unlimited, -1); absent topics are not
    in the result. A compacted topic reports its (unused) retention too."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    names = [t for t in topics if t in existing]
    if not names:
        return {}
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, t) for t in names], request_timeout=timeout
    )
    result: dict[str, int | None] = {}
    for resource, future in futures.items():
        entry = future.result().get("retention.ms")
        ms = int(entry.value) if entry is not None and entry.value is not None else -1
        result[resource.name] = None if ms < 0 else ms
    return result
