"""Offsets of a flow's events topics in single admin requests: ends, times, a group's commits.

One ``ListOffsets`` request for all partitions, as the projection rebuild does:
a consumer's per-partition watermark query waits behind its fetches.
Read committed throughout: the streamer reads only committed transactions, so
its lag and a backfill's range end at the last stable offset.
"""

from __future__ import annotations

import re

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from streamers.streamer import events_pattern

TopicPart = tuple[str, int]
_TIMEOUT = 10.0

# confluent-kafka's OffsetSpec constructors are not annotated.
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


def flow_partitions(admin: AdminClient, flow_id: str) -> list[TopicPart]:
    """Every partition of the flow's events topics: what its streamers subscribe to."""
    pattern = re.compile(events_pattern(flow_id))
    topics = admin.list_topics(timeout=_TIMEOUT).topics
    return sorted(
        (name, partition)
        for name, meta in topics.items()
        if pattern.match(name)
        for partition in meta.partitions
    )


def _list(admin: AdminClient, parts: list[TopicPart], spec: OffsetSpec) -> dict[TopicPart, int]:
    if not parts:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in parts},
        isolation_level=IsolationLevel.READ_COMMITTED,
        request_timeout=_TIMEOUT,
    )
    return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}


def earliest(admin: AdminClient, parts: list[TopicPart]) -> dict[TopicPart, int]:
    return _list(admin, parts, _EARLIEST)


def ends(admin: AdminClient, parts: list[TopicPart]) -> dict[TopicPart, int]:
    """The last stable offset of each partition: where a read-committed reader stops."""
    return _list(admin, parts, _LATEST)


def offsets_at(admin: AdminClient, parts: list[TopicPart], ms: int) -> dict[TopicPart, int]:
    """Per partition, the first offset whose timestamp is at or after ``ms``; the end if none."""
    spec: OffsetSpec = OffsetSpec.for_timestamp(ms)
    found = _list(admin, parts, spec)
    tail = ends(admin, [tp for tp, offset in found.items() if offset < 0])
    return {tp: offset if offset >= 0 else tail[tp] for tp, offset in found.items()}


def committed(admin: AdminClient, group: str, parts: list[TopicPart]) -> dict[TopicPart, int]:
    """The group's committed offset of each partition it committed (others are absent)."""
    if not parts:
        return {}
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in parts])
    result = admin.list_consumer_group_offsets([request], request_timeout=_TIMEOUT)[group].result()
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions or []
        if tp.offset >= 0
    }


def group_lag(admin: AdminClient, group: str, parts: list[TopicPart]) -> int:
    """Records of ``parts`` the group has not committed yet. A partition it never
    committed counts from its earliest offset: the streamer starts there."""
    heads = ends(admin, parts)
    done = committed(admin, group, parts)
    starts = earliest(admin, [tp for tp in parts if tp not in done])
    return sum(max(0, heads[tp] - done.get(tp, starts.get(tp, 0))) for tp in parts)
