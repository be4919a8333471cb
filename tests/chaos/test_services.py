"""What a chaos run does to the services it owns: topics it leaves behind are dropped, and
the stack scripts it calls get bounds fit for a loaded machine. No services: stand-ins."""

from __future__ import annotations

import subprocess
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from chaos import services


class Topics:
    """An admin client over a cluster holding ``names``; deletes what it is asked to."""

    def __init__(self, names: list[str], gone: frozenset[str] = frozenset()) -> None:
        self.names, self.gone = names, gone
        self.deleted: list[str] = []

    def __call__(self, config: dict[str, str]) -> Topics:
        return self

    def list_topics(self, timeout: float) -> Any:
        class Metadata:
            topics = dict.fromkeys(self.names)

        return Metadata()

    def delete_topics(self, names: list[str], operation_timeout: float) -> dict[str, Future[None]]:
        futures: dict[str, Future[None]] = {}
        for name in names:
            future: Future[None] = Future()
            if name in self.gone:
                error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
                future.set_exception(KafkaException(error))
            else:
                self.deleted.append(name)
                future.set_result(None)
            futures[name] = future
        return futures


def test_a_run_drops_the_topics_of_chaos_runs_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every run's topics stayed in the cluster: after 35 runs a broker killed -9 had 360
    # partitions to recover before answering and its restart ran out of time.
    cluster = Topics(
        [
            "leadflow.chaos-1204a.intake",
            "leadflow.chaos-1204a.events.source",
            "leadflow.chaos-1204b.dlq",
            "leadflow.demo.intake",
            "__consumer_offsets",
            "smoke-rf3",
        ],
        gone=frozenset({"leadflow.chaos-1204b.dlq"}),  # deleted meanwhile: no error
    )
    monkeypatch.setattr(services, "AdminClient", cluster)
    dropped = services.drop_topics(services.RUN_TOPICS_PREFIX)
    assert dropped == [
        "leadflow.chaos-1204a.events.source",
        "leadflow.chaos-1204a.intake",
        "leadflow.chaos-1204b.dlq",
    ]
    assert sorted(cluster.deleted) == dropped[:2]
    assert services.drop_topics("leadflow.chaos-1204c.") == []


def test_the_stack_scripts_get_start_bounds_fit_for_a_loaded_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, str]] = []

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(kwargs["env"])
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(services.subprocess, "run", run)
    monkeypatch.delenv("KAFKA_START_TIMEOUT", raising=False)
    monkeypatch.setenv("PG_START_TIMEOUT", "999")  # one the caller set stays
    services._script("stack/kafka-node.sh", "start", "2")
    env = seen[0]
    assert int(env["KAFKA_START_TIMEOUT"]) >= 300  # the script's own default: 90 s
    assert env["PG_START_TIMEOUT"] == "999"
    assert env["STACK_PG_PORT"] == str(services.PG_PORT)


def test_a_failed_script_says_its_own_error_before_the_log_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = "[stack] ERROR: kafka3-node2: no healthy answer after 300s\n" + "log line\n" * 500

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 1, "", stderr)

    monkeypatch.setattr(services.subprocess, "run", run)
    with pytest.raises(services.ServiceError) as failed:
        services._script("stack/kafka-node.sh", "start", "2")
    assert "no healthy answer after 300s" in str(failed.value).splitlines()[0]
