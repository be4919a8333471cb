"""Offsets of a flow's events topics, from the Kafka kit: ends, times, a group's commits, lag.

The streamer reads only committed transactions, so its lag and a backfill's
range end at the last stable offset (``engine.runtime.kafka.offsets``).
"""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from engine.runtime.kafka.offsets import (
    TopicPart,
    committed_offsets,
    lags,
    list_offsets,
    offsets_at,
    topic_partitions,
)
from engine.settings import Settings
from streamers.streamer import events_pattern

# TopicPart and offsets_at (the kit's) are this module's too: the backfill plans with them.
__all__ = [
    "TopicPart", "committed", "earliest", "ends", "flow_partitions", "group_lag", "offsets_at",
]  # fmt: skip


def flow_partitions(admin: AdminClient, flow_id: str) -> list[TopicPart]:
    """Every partition of the flow's events topics: what its streamers subscribe to."""
    return topic_partitions(admin, events_pattern(flow_id))


def earliest(admin: AdminClient, parts: list[TopicPart]) -> dict[TopicPart, int]:
    return list_offsets(admin, parts, "earliest")


def ends(admin: AdminClient, parts: list[TopicPart]) -> dict[TopicPart, int]:
    """The last stable offset of each partition: where a read-committed reader stops."""
    return list_offsets(admin, parts, "latest")


def committed(admin: AdminClient, group: str, parts: list[TopicPart]) -> dict[TopicPart, int]:
    """The group's committed offset of each partition it committed (others are absent)."""
    return committed_offsets(admin, group, parts)


def group_lag(settings: Settings, admin: AdminClient, group: str, parts: list[TopicPart]) -> int:
    """Records of ``parts`` the group has not read yet: 0 once it has read everything (the
    commit markers after its last records are no lag). A partition it never committed
    counts from its earliest offset: the streamer starts there."""
    heads = ends(admin, parts)
    done = committed(admin, group, parts)
    starts = earliest(admin, [tp for tp in parts if tp not in done])
    positions = {tp: done.get(tp, starts.get(tp, 0)) for tp in parts}
    return sum(p.lag for p in lags(settings, {group: positions}, heads)[group])
