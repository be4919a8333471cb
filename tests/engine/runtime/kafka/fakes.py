"""Stand-ins for what librdkafka hands a consumer loop, for tests that need no broker."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, TopicPartition


class FakeMessage:
    """A record (``error()`` None) or an error event, as ``Consumer.consume`` returns them."""

    def __init__(
        self,
        name: str = "",
        *,
        topic: str = "t",
        partition: int = 0,
        offset: int = 0,
        error: KafkaError | None = None,
        value: bytes | None = b"v",
        key: bytes | None = b"k",
    ) -> None:
        self.name = name
        self._topic, self._partition, self._offset = topic, partition, offset
        self._error, self._value, self._key = error, value, key

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key


def records(*names: str) -> list[Any]:
    return [FakeMessage(name) for name in names]


def names(messages: list[Any]) -> list[str]:
    return [m.name for m in messages]


class BufferedConsumer:
    """What librdkafka has already fetched, and what arrives while ``poll`` waits."""

    def __init__(self, buffered: list[Any], arriving: list[Any]) -> None:
        self.buffered, self.arriving = buffered, arriving
        self.waits: list[float] = []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        assert timeout == 0, "a fetch must never block to fill a batch"
        assert num_messages >= 1, "librdkafka refuses a batch of 0"
        taken, self.buffered = self.buffered[:num_messages], self.buffered[num_messages:]
        return taken

    def poll(self, timeout: float = -1) -> Any:
        self.waits.append(timeout)
        if not self.arriving:
            return None
        first, *rest = self.arriving
        self.arriving, self.buffered = [], self.buffered + rest
        return first


class ScriptedConsumer:
    """Hands out one scripted batch per fetch, then nothing; positions as set by the test."""

    def __init__(self, batches: list[list[Any]], positions: dict[tuple[str, int], int]) -> None:
        self.batches, self.positions = list(batches), positions
        self.paused: list[tuple[str, int]] = []
        self.assigned: list[Any] = []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout: float = -1) -> Any:
        return None

    def position(self, parts: list[Any]) -> list[Any]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001)
            )
            for tp in parts
        ]

    def pause(self, parts: list[Any]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in parts]

    def resume(self, parts: list[Any]) -> None:
        pass

    def assign(self, parts: list[Any]) -> None:
        self.assigned = parts

    def unassign(self) -> None:
        self.assigned = []


def end_of(topic: str, partition: int, offset: int) -> FakeMessage:
    """The partition-EOF event librdkafka reports at ``offset``, the partition's end."""
    return FakeMessage(
        topic=topic, partition=partition, offset=offset, error=KafkaError(KafkaError._PARTITION_EOF)
    )
