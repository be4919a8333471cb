"""Offsets and lag on the real broker: transaction markers and aborted records are no lag."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from engine.ops.offsets import group_lag
from engine.runtime.kafka.clients import new_consumer, new_transactional_producer
from engine.runtime.kafka.offsets import committed_offsets, lags, list_offsets
from engine.settings import Settings
from tests.engine.runtime.kafka.conftest import RECORDS, settle

pytestmark = pytest.mark.stack


@pytest.fixture
def group(stack: Settings, admin: AdminClient, unique_id: str) -> Iterator[str]:
    name = f"leadflow.{unique_id}.kit-group"
    yield name
    try:
        admin.delete_consumer_groups([name], request_timeout=10)[name].result()
    except KafkaException as exc:  # cleanup must never fail a test that passed
        print(f"could not delete group {name}: {exc}")


def commit(settings: Settings, group: str, topic: str, offset: int) -> None:
    consumer = new_consumer(settings, group)
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def test_a_group_that_read_everything_has_no_lag_though_a_marker_follows_it(
    stack: Settings, admin: AdminClient, topic: str, group: str
) -> None:
    # What a step's transaction commits: the offset after the last record it read.
    commit(stack, group, topic, RECORDS)

    [found] = group_lag(stack, group_prefix=group)  # what `leadflow offsets` shows

    [partition] = found.partitions
    assert (partition.committed, partition.end) == (RECORDS, RECORDS + 1)
    assert partition.lag == 0 and found.lag == 0


def test_a_group_with_records_left_has_exactly_that_many_as_lag(
    stack: Settings, admin: AdminClient, topic: str, group: str
) -> None:
    commit(stack, group, topic, 2)

    [found] = group_lag(stack, group_prefix=group)

    assert found.lag == RECORDS - 2


def test_aborted_records_are_no_lag_and_far_behind_the_lag_is_the_distance(
    stack: Settings, admin: AdminClient, topic: str
) -> None:
    producer = new_transactional_producer(stack, f"{topic}.writer")
    producer.init_transactions()
    producer.begin_transaction()
    for _ in range(4):
        producer.produce(topic, b"never", b"k")
    assert producer.flush(10) == 0  # on the broker: an abort before would drop them unsent
    producer.abort_transaction()  # offsets 6-9 aborted, the abort marker at 10
    settle(admin, topic, 11)
    tp = (topic, 0)
    ends = list_offsets(admin, [tp], "latest")

    found = lags(stack, {"read all": {tp: 6}, "two left": {tp: 3}}, ends)
    assert [p.lag for p in found["read all"]] == [0]
    assert [p.lag for p in found["two left"]] == [2]

    far = lags(stack, {"behind": {tp: 0}, "past aborts": {tp: 6}}, ends, exact_up_to=2)
    assert [p.lag for p in far["behind"]] == [11]  # records ahead: the offset distance
    assert [p.lag for p in far["past aborts"]] == [0]  # none readable: no lag at all


def test_committed_offsets_and_listed_offsets(
    stack: Settings, admin: AdminClient, topic: str, group: str
) -> None:
    commit(stack, group, topic, 3)
    tp = (topic, 0)
    assert committed_offsets(admin, group) == {tp: 3}
    assert committed_offsets(admin, group, [tp]) == {tp: 3}
    assert list_offsets(admin, [tp], "earliest") == {tp: 0}
    assert list_offsets(admin, [tp], 2**62) == {tp: -1}  # no record that late
