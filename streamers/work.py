"""Units of work a sink hands the streaming loop, and what comes back when they are durable.

The loop (``streamers.streamer``) runs jobs concurrently, retries the failed ones,
and only once every job of a round has succeeded does it commit the round's
offsets and apply its seeks: "written" and "committed" cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.objects.contract import ObjectStore

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Written:
    key: str
    size: int
    created: bool


@dataclass(slots=True)
class Outcome:
    """What a successful job made durable and what it allows the loop to do."""

    written: list[Written] = field(default_factory=list)
    # Next offsets everything before which is durable.
    commit: dict[TopicPartitionKey, int] = field(default_factory=dict)
    # Partitions whose consumer position must move (the store held a different range).
    seek: dict[TopicPartitionKey, int] = field(default_factory=dict)


# A job writes one object (or one batch) and raises DestinationError when the store fails;
# it may run again after a failure, so it must be idempotent.
Job = Callable[[ObjectStore], Outcome]


@dataclass(slots=True)
class Round:
    """Jobs that can run concurrently; ``commit`` holds once all of them succeeded."""

    jobs: list[Job]
    commit: dict[TopicPartitionKey, int] = field(default_factory=dict)
    done: list[Callable[[], None]] = field(default_factory=list)  # cleanup, after success


def merge_offsets(
    into: dict[TopicPartitionKey, int], offsets: dict[TopicPartitionKey, int]
) -> None:
    for tp, offset in offsets.items():
        into[tp] = max(into.get(tp, 0), offset)
