"""How a chaos run waits for its flow to drain, and for the cluster to be whole again after a
broker fault: bounded waits that adapt to the machine's speed, never fixed windows.

No services: the clock, the flow's progress and the cluster's metadata are stand-ins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chaos import observe, run, services


class Clock:
    """``time`` for the code under test: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


LEADS = 500


def settle(
    monkeypatch: pytest.MonkeyPatch,
    completed: Callable[[float], int],
    lag: Callable[[float], int],
    offsets: Callable[[float], dict[str, int] | None] | None = None,
    timeout: float = 600,
    stall: float = 120,
) -> tuple[float, str]:
    """``run._settle`` over a flow whose completed leads and lag are functions of time; its
    groups' committed offsets follow the completed leads unless ``offsets`` is given."""
    clock = Clock()
    monkeypatch.setattr(run, "time", clock)
    monkeypatch.setattr(run, "_completed", lambda *_: completed(clock.now))
    follow = offsets or (lambda t: {"step": 3 * completed(t)})
    monkeypatch.setattr(run, "_offsets", lambda *_: follow(clock.now))
    monkeypatch.setattr(observe, "group_lag", lambda *_: {"step": lag(clock.now)})
    nothing: Any = None
    return run._settle(nothing, nothing, LEADS, timeout, stall)


def test_a_run_that_drains_slowly_on_a_loaded_machine_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two leads a second: 250 s to drain, past the fixed 150 s window the reduced run
    # once had, which then reported the leads still on their way as lost.
    took, why = settle(
        monkeypatch, lambda t: min(LEADS, int(2 * t)), lambda t: 0 if t >= 250 else 9
    )
    assert why == "drained"
    assert 250 <= took < 260


def test_completed_leads_are_not_enough_while_a_group_still_has_records_to_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every lead is in Postgres at 20 s, but a streamer has 40 s of records left.
    took, why = settle(
        monkeypatch, lambda t: min(LEADS, int(25 * t)), lambda t: 0 if t >= 60 else 7
    )
    assert why == "drained"
    assert 60 <= took < 70


def test_a_pause_shorter_than_the_stall_window_is_not_taken_for_a_stuck_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing moves from 10 s to 100 s (a transaction timing out, a store's backoff),
    # then the flow goes on and drains.
    def completed(t: float) -> int:
        return 200 if t < 100 else min(LEADS, 200 + int(10 * (t - 100)))

    took, why = settle(monkeypatch, completed, lambda t: 0 if completed(t) == LEADS else 5)
    assert why == "drained"
    assert 130 <= took < 140


def test_a_stuck_run_is_given_up_once_nothing_has_moved_for_the_stall_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A group stuck for good: waiting the whole bound would only hide it.
    took, why = settle(monkeypatch, lambda t: 300, lambda t: 40, stall=120)
    assert why == "stalled"
    assert 120 <= took < 130


def test_a_run_that_keeps_moving_is_still_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    took, why = settle(monkeypatch, lambda t: int(t / 10), lambda t: 1, timeout=600)
    assert why == "timed out"
    assert 600 <= took < 610


def test_offsets_that_cannot_be_read_are_not_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    _, why = settle(monkeypatch, lambda t: 10, lambda t: 3, lambda t: None, stall=60)
    assert why == "stalled"


# -- the cluster whole again after a broker fault ------------------------------------------


@dataclass
class Partition:
    id: int
    leader: int
    replicas: list[int]
    isrs: list[int]


@dataclass
class Topic:
    partitions: dict[int, Partition]


@dataclass
class Metadata:
    topics: dict[str, Topic]


@dataclass
class Cluster:
    """An admin client whose metadata shows broker 2 catching up for ``catching_up`` calls."""

    catching_up: int
    calls: int = 0
    seen: list[str] = field(default_factory=list)

    def __call__(self, config: dict[str, str]) -> Cluster:
        self.seen.append(config["bootstrap.servers"])
        return self

    def list_topics(self, timeout: float) -> Metadata:
        self.calls += 1
        isr = [1, 3] if self.calls <= self.catching_up else [1, 2, 3]
        parts = {0: Partition(0, 1, [1, 2, 3], isr), 1: Partition(1, 3, [3, 1, 2], [3, 1, 2])}
        return Metadata({"__transaction_state": Topic(parts)})


def test_after_a_broker_restart_the_run_waits_until_its_replicas_are_in_sync_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, cluster = Clock(), Cluster(catching_up=5)
    monkeypatch.setattr(services, "time", clock)
    monkeypatch.setattr(services, "AdminClient", cluster)
    assert services.wait_in_sync(timeout=120) == []
    assert cluster.calls == 6
    assert cluster.seen == [services.KAFKA3_BOOTSTRAP]


def test_replicas_that_never_catch_up_are_reported_once_the_wait_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, cluster = Clock(), Cluster(catching_up=10**6)
    monkeypatch.setattr(services, "time", clock)
    monkeypatch.setattr(services, "AdminClient", cluster)
    assert services.wait_in_sync(timeout=30) == ["__transaction_state[0]"]
    assert 30 <= clock.now < 32


def test_a_partition_without_a_leader_is_out_of_sync() -> None:
    leaderless: Any = Cluster(catching_up=0)
    leaderless.list_topics = lambda timeout: Metadata(
        {"t": Topic({0: Partition(0, -1, [1, 2, 3], [1, 2, 3])})}
    )
    assert services.out_of_sync(leaderless) == ["t[0]"]
