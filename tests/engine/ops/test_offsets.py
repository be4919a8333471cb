"""Consumer group offsets on the real broker: lag, dry-run plans, resets, refusal while active."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from typer.testing import CliRunner

from engine.ops.offsets import GroupActiveError, GroupLag, apply_reset, group_lag, plan_reset
from engine.ops.offsets_cli import offsets_app
from engine.runtime.kafka.config import admin_config, consumer_config, producer_config
from engine.settings import Settings
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

PER_PARTITION = 10
COMMITTED = {0: 3, 1: 7}
T0_MS = 1_700_000_000_000  # batch one; batch two a minute later
GAP_MS = 60_000


@pytest.fixture
def topic(stack: Settings, unique_id: str) -> str:
    """Two partitions, each holding five records at T0 then five at T0 + one minute."""
    name = f"leadflow.{unique_id}.events.x"
    admin = AdminClient(admin_config(stack))
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result()
    producer = Producer(producer_config(stack))
    for partition in (0, 1):
        for i in range(PER_PARTITION):
            ts = T0_MS if i < PER_PARTITION // 2 else T0_MS + GAP_MS
            producer.produce(name, value=b"v", partition=partition, timestamp=ts)
    assert producer.flush(10) == 0
    return name


@pytest.fixture
def group(stack: Settings, unique_id: str, topic: str) -> Iterator[str]:
    """A group that committed part of each partition and has no members."""
    name = f"leadflow.{unique_id}.step.x"
    consumer = Consumer(consumer_config(stack, name))
    parts = [TopicPartition(topic, p, offset) for p, offset in COMMITTED.items()]
    consumer.assign(parts)
    consumer.commit(offsets=parts, asynchronous=False)
    consumer.close()
    yield name
    admin = AdminClient(admin_config(stack))
    try:
        admin.delete_consumer_groups([name], request_timeout=10)[name].result()
    except Exception as exc:  # cleanup must never fail a test that passed
        print(f"could not delete group {name}: {exc}")


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings, group))
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}


def _lag_of(settings: Settings, group: str) -> GroupLag:
    [found] = group_lag(settings, group_prefix=group)
    return found


def test_lag_is_end_minus_committed_per_partition(stack: Settings, group: str, topic: str) -> None:
    found = _lag_of(stack, group)

    assert found.group == group and found.members == 0 and found.state == "EMPTY"
    assert [(p.topic, p.partition, p.committed, p.end, p.lag) for p in found.partitions] == [
        (topic, 0, 3, 10, 7),
        (topic, 1, 7, 10, 3),
    ]
    assert found.lag == 10


def test_default_prefix_lists_only_leadflow_groups(stack: Settings, group: str) -> None:
    groups = [g.group for g in group_lag(stack)]

    assert group in groups
    assert all(g.startswith("leadflow.") for g in groups)


def test_plan_to_earliest_changes_nothing(stack: Settings, group: str, topic: str) -> None:
    moves = plan_reset(stack, group, "earliest")

    assert [(m.topic, m.partition, m.current, m.target) for m in moves] == [
        (topic, 0, 3, 0),
        (topic, 1, 7, 0),
    ]
    assert _committed(stack, group, topic) == COMMITTED


def test_apply_moves_to_earliest(stack: Settings, group: str, topic: str) -> None:
    apply_reset(stack, group, plan_reset(stack, group, "earliest"))

    assert _committed(stack, group, topic) == {0: 0, 1: 0}
    assert _lag_of(stack, group).lag == 2 * PER_PARTITION


def test_to_time_picks_first_offset_at_or_after_it(stack: Settings, group: str, topic: str) -> None:
    between = datetime.fromtimestamp((T0_MS + GAP_MS / 2) / 1000, tz=UTC)

    moves = plan_reset(stack, group, between)
    apply_reset(stack, group, moves)

    first_of_batch_two = PER_PARTITION // 2
    assert [m.target for m in moves] == [first_of_batch_two, first_of_batch_two]
    assert _committed(stack, group, topic) == {0: first_of_batch_two, 1: first_of_batch_two}


def test_to_time_after_last_record_moves_to_end(stack: Settings, group: str) -> None:
    later = datetime.fromtimestamp((T0_MS + 2 * GAP_MS) / 1000, tz=UTC)

    assert [m.target for m in plan_reset(stack, group, later)] == [PER_PARTITION] * 2


def test_reset_refused_while_a_member_is_active(stack: Settings, group: str, topic: str) -> None:
    moves = plan_reset(stack, group, "earliest")
    member = Consumer(consumer_config(stack, group))
    member.subscribe([topic])
    try:

        def joined() -> list[TopicPartition]:
            member.poll(0.2)
            return list(member.assignment())

        wait_until(joined, 15, "the member to join its group", every=0)

        with pytest.raises(GroupActiveError, match="1 active member"):
            apply_reset(stack, group, moves)
    finally:
        member.close()
    assert _committed(stack, group, topic) == COMMITTED


def test_cli_dry_run_then_execute(stack: Settings, group: str, topic: str) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})  # so rich does not wrap the long names

    shown = runner.invoke(offsets_app, ["--group-prefix", group])
    dry = runner.invoke(offsets_app, ["reset", group, "--to-earliest"])
    after_dry = _committed(stack, group, topic)
    done = runner.invoke(offsets_app, ["reset", group, "--to-earliest", "--execute"])

    assert shown.exit_code == 0 and group in shown.output and "EMPTY" in shown.output
    assert dry.exit_code == 0 and "dry run" in dry.output
    assert after_dry == COMMITTED
    assert done.exit_code == 0, done.output
    assert _committed(stack, group, topic) == {0: 0, 1: 0}


def test_cli_needs_exactly_one_target(group: str) -> None:
    result = CliRunner().invoke(offsets_app, ["reset", group])

    assert result.exit_code != 0
