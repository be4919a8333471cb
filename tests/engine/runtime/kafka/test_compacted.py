"""Reading a topic to its end on the real broker, past a transaction's commit marker."""

from __future__ import annotations

import pytest

from engine.runtime.kafka.clients import new_producer
from engine.runtime.kafka.compacted import TopicReader
from engine.settings import Settings

pytestmark = pytest.mark.stack


def test_a_reader_reads_to_the_end_past_the_commit_marker_and_on_from_there(
    stack: Settings, topic: str
) -> None:
    reader = TopicReader(stack, [(topic, 0)], "kit-test")
    try:
        # A long timeout: a read that waited for a record at the marker's offset would
        # end at it with complete False, never on time.
        records, complete = reader.read_to_end(60)
        assert complete and [m.value() for m in records] == [f"v{i}".encode() for i in range(5)]

        records, complete = reader.read_to_end(60)
        assert complete and records == []

        producer = new_producer(stack)
        producer.produce(topic, b"later", b"k")
        assert producer.flush(10) == 0
        records, complete = reader.read_to_end(60)
        assert complete and [m.value() for m in records] == [b"later"]
    finally:
        reader.close()
