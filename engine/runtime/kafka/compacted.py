"""Reading a topic from its beginning to its end, and on from there: a compacted topic as a table.

The flow registry (``leadflow.flows``) and the destinations' lifecycle trail
(``leadflow.destinations``) are read this way: whole, by a reader that never joins
a group (every reader wants all of it, never a share), and again later from where
the last read stopped.

"Its end" is the end the partitions have when a read begins, asked of the broker
every time (read_committed: the last stable offset). librdkafka's partition-EOF
event is no substitute: it fires once per arrival at the end, so a reader that
waited for it on a topic it had already read to the end waited out its whole
timeout (5 s per intake of an unknown flow). A read is done once every
partition's position reaches its end; the position, not the last record's
offset + 1, since a transaction's commit marker takes the last offset and is never
delivered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from engine.runtime.kafka.clients import new_consumer
from engine.runtime.kafka.fetch import ConsumeErrors, fetch
from engine.settings import Settings

TopicPart = tuple[str, int]
_POLL_S = 0.2


class TopicReader:
    """Reads ``partitions`` from the beginning; each :meth:`read_to_end` goes on from the
    last one. Opens its consumer at the first read."""

    def __init__(self, settings: Settings, partitions: Sequence[TopicPart], name: str) -> None:
        self.settings = settings
        self.partitions = list(partitions)
        self.name = name
        self._consumer: Consumer | None = None
        self._errors = ConsumeErrors(name)

    def _open(self) -> Consumer:
        if self._consumer is None:
            # A throwaway group id: partitions are assigned, nothing is committed.
            group = f"leadflow.reader.{self.name}.{uuid.uuid4().hex}"
            consumer = new_consumer(self.settings, group)
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self.partitions])
            self._consumer = consumer
        return self._consumer

    def read_to_end(self, timeout: float) -> tuple[list[Message], bool]:
        """The records after the last read, up to the end each partition has now, and whether
        they all reached it (False: ``timeout`` seconds passed first; what was read is
        returned and the next read goes on after it). Raises ``KafkaException`` if the
        ends cannot be asked (Kafka is away), having read nothing."""
        consumer = self._open()
        deadline = time.monotonic() + timeout
        ends: dict[TopicPart, int] = {}
        for topic, partition in self.partitions:
            low, end = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout, cached=False
            )
            if end > low:
                ends[(topic, partition)] = end
        records: list[Message] = []
        while True:
            positions = consumer.position([TopicPartition(t, p) for t, p in ends])
            if all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in positions):
                return records, True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return records, False
            records += fetch(consumer, 500, min(_POLL_S, remaining), self._errors)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
