"""Worker metrics on the real broker: a transactional producer's, and `leadflow run` exposing
every role's at one port, scraped while a step worker and the projector run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.inputs import accepted_events, fill
from engine.errors import TransientStepError
from engine.runtime.kafka.clients import new_transactional_producer
from engine.runtime.kafka.metrics import REGISTRY, WorkerMetrics
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import events_topic
from projectors.generations import migrate_database
from tests.factories import make_flow, write_flow
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

LEADS = 12
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series carrying ``labels`` (others summed over)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


@pytest.fixture
def running(stack: Settings, unique_id: str, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """`leadflow run -f FLOW service-area projector` with LEADFLOW_METRICS_PORT; its port and
    the flow id. Leads' hand-offs are put on the filter's input directly."""
    settings = stack.model_copy(
        update={
            "db_schema": unique_id,
            "projector_pattern": rf"^leadflow\.{unique_id}\.events\..+$",
        }
    )
    flow = make_flow(unique_id, "http://127.0.0.1:9/leads")
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    prepare_topics(settings, flow)
    migrate_database(settings)
    port = free_port()
    env = {
        **os.environ,
        "LEADFLOW_METRICS_PORT": str(port),
        "LEADFLOW_DB_SCHEMA": unique_id,
        "LEADFLOW_PROJECTOR_PATTERN": settings.projector_pattern,
        "LEADFLOW_LOG_FORMAT": "json",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with (tmp_path / "workers.log").open("wb") as log:
        workers = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "run",
                "-f",
                str(flow_file),
                "service-area",
                "projector",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        fill(settings, events_topic(unique_id, "source"), accepted_events(unique_id, LEADS))
        yield port, unique_id
    finally:
        os.killpg(workers.pid, signal.SIGTERM)
        try:
            workers.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(workers.pid, signal.SIGKILL)
            workers.wait(10)


def test_one_exposition_holds_the_step_workers_and_the_projectors_metrics(
    running: tuple[int, str],
) -> None:
    port, flow_id = running
    step, source = f"step:{flow_id}:service-area", events_topic(flow_id, "source")
    found: Samples = {}

    def projected() -> bool:
        nonlocal found
        try:
            found = scrape(port)
        except OSError:
            return False  # not serving yet
        written = value(
            found, "leadflow_worker_records_in_total", role="projector:timeline", topic=source
        )
        processed = value(found, "leadflow_worker_records_in_total", role=step, topic=source)
        return processed == LEADS and written == LEADS

    wait_until(projected, 90, "the step's and the projector's records in the metrics")

    assert value(found, "leadflow_worker_records_in_total", role=step, outcome="processed") == LEADS
    assert value(found, "leadflow_worker_records_out_total", role=step) >= LEADS
    assert value(found, "leadflow_worker_commit_seconds_count", role=step) >= 1
    assert value(found, "leadflow_worker_batch_records_sum", role=step) == LEADS
    assert value(found, "leadflow_worker_commit_seconds_count", role="projector:timeline") >= 1
    # The projector's own series carry its role, whichever topics it also read.
    assert (
        value(
            found, "leadflow_worker_records_in_total", role="projector:timeline", outcome="written"
        )
        >= LEADS
    )

    def lag_sampled() -> bool:
        nonlocal found
        found = scrape(port)
        return any(
            n == "leadflow_worker_consumer_lag_records" and ("role", step) in labels
            for n, labels in found
        )

    wait_until(lag_sampled, 30, "the step's consumer lag to be sampled")


def test_a_metered_producer_times_its_commits_and_counts_its_aborts_by_cause(
    stack: Settings, topic: str
) -> None:
    role = f"step:{topic}"
    producer = new_transactional_producer(stack, f"{topic}.metered", WorkerMetrics(role))
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce(topic, b"v", b"k")
    producer.commit_transaction()
    producer.begin_transaction()
    producer.produce(topic, b"v", b"k")
    try:
        raise TransientStepError("postgres away")
    except TransientStepError:
        producer.abort_transaction()

    assert REGISTRY.get_sample_value("leadflow_worker_commit_seconds_count", {"role": role}) == 1
    aborts = {"role": role, "cause": "TransientStepError"}
    assert REGISTRY.get_sample_value("leadflow_worker_transaction_aborts_total", aborts) == 1
