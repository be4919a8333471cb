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
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.cimpl import NewTopic

from engine.flows import Flow
from engine.runtime.kafka.config import LEADER_NOT_READY
from engine.topics import flow_topics

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
    """Every topic of ``flow`` (``engine.topics.flow_topics``), as its definition sizes them."""
    return [
        TopicSpec(name, flow.topics.partitions, flow.topics.replication)
        for name in flow_topics(flow)
    ]


def ensure_flow_topics(admin: AdminClient, flow: Flow, timeout: float = 30.0) -> list[str]:
    """Create the flow's topics that do not exist yet; returns the ones created."""
    return ensure_topics(admin, flow_topic_specs(flow), timeout)
