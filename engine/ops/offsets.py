"""Consumer group lag, and resetting a group's committed offsets (replay).

Replaying is safe for the engine's own groups: event ids are deterministic and
every consumer is idempotent, so re-reading a range re-derives the same events.
Resets are dry-run first: :func:`plan_reset` only reads, :func:`apply_reset` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from engine.errors import LeadflowError
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.offsets import (
    PartitionLag,
    committed_offsets,
    lags,
    list_offsets,
    offsets_at,
)
from engine.settings import Settings
from engine.topics import PREFIX

DEFAULT_GROUP_PREFIX = f"{PREFIX}."
_TIMEOUT = 10.0


class OffsetsError(LeadflowError):
    """A consumer group's offsets could not be read or moved."""


class UnknownGroupError(OffsetsError):
    """No consumer group has this id (or starts with this prefix): an operator's typo
    must not read as "no lag" or "nothing to move"."""


class GroupActiveError(OffsetsError):
    """The group has live members; Kafka only lets an empty group's offsets be altered."""

    def __init__(self, group: str, members: int) -> None:
        self.group = group
        self.members = members
        super().__init__(
            f"group {group} has {members} active member(s): stop its workers before resetting"
        )


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    members: int
    # Per committed partition: the committed offset, the end (the last stable offset
    # under read_committed: what the group's readers can reach) and the records left
    # to read in between (transaction markers and aborted records take offsets, not
    # records: a group that has read everything has lag 0).
    partitions: list[PartitionLag]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True)
class Move:
    topic: str
    partition: int
    current: int
    target: int

    @property
    def delta(self) -> int:
        return self.target - self.current


ResetTarget = Literal["earliest"] | datetime


def _describe(admin: AdminClient, groups: list[str]) -> dict[str, tuple[str, int]]:
    """(state, member count) of each group."""
    if not groups:
        return {}
    out = {}
    for group, future in admin.describe_consumer_groups(groups, request_timeout=_TIMEOUT).items():
        description = future.result()
        state = description.state.name if description.state is not None else "UNKNOWN"
        out[group] = (state, len(description.members))
    return out


def group_lag(settings: Settings, group_prefix: str | None = None) -> list[GroupLag]:
    """Lag of every consumer group whose id starts with the prefix (``leadflow.`` by default)."""
    prefix = DEFAULT_GROUP_PREFIX if group_prefix is None else group_prefix
    admin = new_admin(settings)
    try:
        groups = [g for g in _group_ids(admin) if g.startswith(prefix)]
        described = _describe(admin, groups)
        positions = {group: committed_offsets(admin, group) for group in groups}
        ends = list_offsets(admin, {tp for parts in positions.values() for tp in parts}, "latest")
        found = lags(settings, positions, ends)
        return [GroupLag(g, *described[g], found[g]) for g in groups]
    except KafkaException as exc:
        raise OffsetsError(f"could not read consumer group lag: {exc}") from exc


def _group_ids(admin: AdminClient) -> list[str]:
    listing = admin.list_consumer_groups(request_timeout=_TIMEOUT).result()
    return sorted(g.group_id for g in listing.valid)


def plan_reset(settings: Settings, group: str, to: ResetTarget) -> list[Move]:
    """Where each committed partition of the group would move; reads only.

    ``to`` is ``"earliest"`` (the oldest retained offset) or a time: the first
    offset whose timestamp is at or after it, or the end when there is none
    (as ``kafka-consumer-groups --to-datetime`` does). ``UnknownGroupError`` for a
    group the broker does not know.
    """
    admin = new_admin(settings)
    try:
        if group not in _group_ids(admin):
            raise UnknownGroupError(
                f"no consumer group matches {group} (leadflow offsets lists them)"
            )
        current = committed_offsets(admin, group)
        if to == "earliest":
            targets = list_offsets(admin, current, "earliest")
        else:
            aware = to if to.tzinfo is not None else to.replace(tzinfo=UTC)
            targets = offsets_at(admin, current, int(aware.timestamp() * 1000))
        return [Move(t, p, offset, targets[(t, p)]) for (t, p), offset in current.items()]
    except KafkaException as exc:
        raise OffsetsError(f"could not plan a reset of group {group}: {exc}") from exc


def apply_reset(settings: Settings, group: str, moves: list[Move]) -> None:
    """Commit the moves' targets as the group's offsets; the group must have no members."""
    if not moves:
        return
    admin = new_admin(settings)
    try:
        _, members = _describe(admin, [group])[group]
        if members:
            raise GroupActiveError(group, members)
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(m.topic, m.partition, m.target) for m in moves]
        )
        result = admin.alter_consumer_group_offsets([request], request_timeout=_TIMEOUT)
        altered = result[group].result()
    except KafkaException as exc:
        # A member that joined after the check makes the broker refuse the whole request.
        raise OffsetsError(f"could not reset group {group}: {exc}") from exc
    failed = [tp for tp in altered.topic_partitions or [] if tp.error is not None]
    if failed:
        detail = ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed)
        raise OffsetsError(f"could not reset group {group}: {detail}")
