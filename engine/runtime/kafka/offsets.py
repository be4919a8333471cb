"""Offsets of partitions and positions of consumer groups: ListOffsets, committed offsets, lag.

ListOffsets goes to the admin client, one request for every partition at once:
a consumer's per-partition watermark query waits behind its own fetches (tens of
milliseconds each) once it reads. Read committed throughout: "the end" of a
partition is its last stable offset, where a read_committed reader stops.

Lag is not ``end - committed``. A partition written in transactions ends with a
commit marker, an offset no consumer ever receives: a group that has read
everything has committed the offset after its last *record*, one short of the
end (``leadflow offsets`` showed 1 on every caught-up partition, which reads as a
stuck group). Aborted records take offsets nobody reads too. So where a group is
short of the end, the records in between are read (read_committed, as the group
reads them) and counted: exactly, up to ``EXACT_UP_TO`` offsets; beyond that, only
whether there is any, so the lag is then the offset distance or 0.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from engine.runtime.kafka.clients import new_consumer
from engine.runtime.kafka.config import LEADER_NOT_READY
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.settings import Settings

TopicPart = tuple[str, int]
# "earliest", "latest" (the last stable offset), or an epoch-ms time.
OffsetQuery = Literal["earliest", "latest"] | int

TIMEOUT_S = 10.0
# A group this close to the end has its remaining records counted one by one.
EXACT_UP_TO = 1000
# Reads records to count them; assigns partitions itself and never commits, so this
# group id never appears on the broker.
_LAG_READER_GROUP = "leadflow-lag-reader"

# confluent-kafka's OffsetSpec constructors are not annotated.
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


def topic_partitions(admin: AdminClient, pattern: str) -> list[TopicPart]:
    """Every partition of the topics whose names match the regex ``pattern``, sorted."""
    matcher = re.compile(pattern)
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    return sorted(
        (name, partition)
        for name, meta in topics.items()
        if matcher.match(name)
        for partition in meta.partitions
    )


def list_offsets(
    admin: AdminClient, parts: Iterable[TopicPart], at: OffsetQuery, timeout: float = TIMEOUT_S
) -> dict[TopicPart, int]:
    """Per partition, the earliest offset, the end (last stable offset), or for a time the
    first offset whose timestamp is at or after it (-1 where there is none).

    Partitions whose leader is not ready (``LEADER_NOT_READY``) are asked again until
    ``timeout``: librdkafka's admin client does not retry them itself, where a consumer's
    watermark query did."""
    wanted = list(parts)
    spec: OffsetSpec
    if at == "earliest":
        spec = _EARLIEST
    elif at == "latest":
        spec = _LATEST
    else:
        spec = OffsetSpec.for_timestamp(at)
    found: dict[TopicPart, int] = {}
    deadline = time.monotonic() + timeout
    while wanted:
        futures = admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in wanted},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=max(1.0, deadline - time.monotonic()),
        )
        wanted = []
        for tp, future in futures.items():
            try:
                found[(tp.topic, tp.partition)] = int(future.result().offset)
            except KafkaException as exc:
                if exc.args[0].code() not in LEADER_NOT_READY or time.monotonic() >= deadline:
                    raise
                wanted.append((tp.topic, tp.partition))
        if wanted:
            time.sleep(0.1)
    return found


def offsets_at(admin: AdminClient, parts: Iterable[TopicPart], ms: int) -> dict[TopicPart, int]:
    """Per partition, the first offset whose timestamp is at or after ``ms``; the end where
    there is none (as ``kafka-consumer-groups --to-datetime`` does)."""
    found = list_offsets(admin, parts, ms)
    ends = list_offsets(admin, [tp for tp, offset in found.items() if offset < 0], "latest")
    return {tp: offset if offset >= 0 else ends[tp] for tp, offset in found.items()}


def committed_offsets(
    admin: AdminClient, group: str, parts: Iterable[TopicPart] | None = None
) -> dict[TopicPart, int]:
    """The group's committed offset of each partition (of ``parts``, else of every partition
    it committed), sorted; partitions it never committed are absent."""
    wanted = None if parts is None else [TopicPartition(t, p) for t, p in parts]
    if wanted == []:
        return {}
    # librdkafka accepts one group per ListConsumerGroupOffsets request.
    request = ConsumerGroupTopicPartitions(group, wanted)
    result = admin.list_consumer_group_offsets([request], request_timeout=TIMEOUT_S)
    found = result[group].result().topic_partitions or []
    return dict(sorted(((tp.topic, tp.partition), tp.offset) for tp in found if tp.offset >= 0))


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Where a reader stands in one partition and how many records it has left to read."""

    topic: str
    partition: int
    committed: int  # the offset it reads next
    end: int  # the last stable offset
    lag: int  # readable records in [committed, end)


def lag_from(committed: int, end: int, found: list[int] | None, exact_up_to: int) -> int:
    """The lag of a reader at ``committed`` in a partition ending at ``end``, from the offsets
    of readable records ``found`` by reading from at most ``committed`` (every one up to
    ``end`` when ``end - committed <= exact_up_to``, else at least the first after
    ``committed``); ``found`` None: not read (Kafka did not answer in time), so the offset
    distance, an upper bound."""
    distance = max(end - committed, 0)
    if distance == 0:
        return 0
    if found is None:
        return distance
    readable = sum(1 for offset in found if committed <= offset < end)
    if distance <= exact_up_to:
        return readable
    return distance if readable else 0


@dataclass(frozen=True, slots=True)
class RangeRead:
    start: int
    end: int
    every: bool  # every record up to the end; else only the first


def lags(
    settings: Settings,
    positions: Mapping[str, Mapping[TopicPart, int]],
    ends: Mapping[TopicPart, int],
    *,
    exact_up_to: int = EXACT_UP_TO,
    timeout: float = TIMEOUT_S,
) -> dict[str, list[PartitionLag]]:
    """Per reader (a consumer group, say) of ``positions``, the lag of each of its partitions
    (sorted), from the offset it reads next and ``ends`` (``list_offsets(..., "latest")``).

    Every partition a reader is short of the end in is read once, for all readers at once."""
    probes = plan_reads(positions, ends, exact_up_to)
    found = _read_probes(settings, probes, timeout)
    out: dict[str, list[PartitionLag]] = {}
    for reader, parts in positions.items():
        out[reader] = []
        for (topic, partition), committed in sorted(parts.items()):
            end = ends[(topic, partition)]
            lag = lag_from(committed, end, found.get((topic, partition)), exact_up_to)
            out[reader].append(PartitionLag(topic, partition, committed, end, lag))
    return out


def plan_reads(
    positions: Mapping[str, Mapping[TopicPart, int]],
    ends: Mapping[TopicPart, int],
    exact_up_to: int,
) -> list[dict[TopicPart, RangeRead]]:
    """The reads that answer every reader's lag, in passes of one read per partition: one
    read of every record from the lowest position close to the end (it answers every
    reader that close), and one read of the first record per position further away."""
    per_partition: dict[TopicPart, list[RangeRead]] = {}
    close: dict[TopicPart, int] = {}
    far: dict[TopicPart, set[int]] = {}
    for parts in positions.values():
        for tp, committed in parts.items():
            distance = ends[tp] - committed
            if distance <= 0:
                continue
            if distance <= exact_up_to:
                close[tp] = min(close.get(tp, committed), committed)
            else:
                far.setdefault(tp, set()).add(committed)
    for tp, start in close.items():
        per_partition.setdefault(tp, []).append(RangeRead(start, ends[tp], every=True))
    for tp, starts in far.items():
        per_partition.setdefault(tp, []).extend(RangeRead(s, ends[tp], every=False) for s in starts)
    passes: list[dict[TopicPart, RangeRead]] = []
    for tp, probes in per_partition.items():
        for i, probe in enumerate(probes):
            if i == len(passes):
                passes.append({})
            passes[i][tp] = probe
    return passes


def _read_probes(
    settings: Settings, passes: list[dict[TopicPart, RangeRead]], timeout: float
) -> dict[TopicPart, list[int]]:
    """Offsets of the readable records each probe found; a partition whose probe did not
    finish within ``timeout`` is absent (its lag is then the offset distance)."""
    found: dict[TopicPart, list[int]] = {}
    if not passes:
        return found
    deadline = time.monotonic() + timeout
    consumer = new_consumer(settings, _LAG_READER_GROUP, **{"enable.partition.eof": True})
    try:
        for probes in passes:
            offsets = _read_pass(consumer, probes, deadline)
            for tp, seen in offsets.items():
                found[tp] = sorted({*found.get(tp, []), *seen})
    finally:
        consumer.close()
    return found


def _read_pass(
    consumer: Consumer, probes: dict[TopicPart, RangeRead], deadline: float
) -> dict[TopicPart, list[int]]:
    seen: dict[TopicPart, list[int]] = {tp: [] for tp in probes}
    open_ = set(probes)
    ended: dict[TopicPart, int] = {}

    def finish(tp: TopicPart) -> None:
        if tp in open_:
            open_.discard(tp)
            consumer.pause([TopicPartition(*tp)])

    def at_end(topic: str, partition: int, offset: int) -> None:
        ended[(topic, partition)] = offset

    errors = ConsumeErrors("lag reader")
    consumer.assign([TopicPartition(t, p, probe.start) for (t, p), probe in probes.items()])
    try:
        while open_ and time.monotonic() < deadline:
            ended.clear()
            for msg in fetch(consumer, 500, 0.2, errors, on_eof=at_end):
                tp = (msg.topic() or "", msg.partition() or 0)
                if tp not in open_:
                    continue
                offset, probe = msg.offset() or 0, probes[tp]
                if offset < probe.end:
                    seen[tp].append(offset)
                if offset + 1 >= probe.end or not probe.every:
                    finish(tp)
            # Ends are reported before the batch's records are seen: looked at after them.
            for tp, offset in ended.items():
                if tp in probes and offset >= probes[tp].end:
                    finish(tp)
            # A range that ends with transaction markers delivers no record at its end:
            # the position, past the markers, says it is done.
            for position in consumer.position([TopicPartition(*tp) for tp in open_]):
                if position.offset >= probes[(position.topic, position.partition)].end:
                    finish((position.topic, position.partition))
    finally:
        # Paused partitions stay paused across an unassign; the next pass may assign them.
        consumer.resume([TopicPartition(*tp) for tp in probes])
        consumer.unassign()
    return {tp: offsets for tp, offsets in seen.items() if tp not in open_}
