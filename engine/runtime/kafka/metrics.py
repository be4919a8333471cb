"""Prometheus metrics every worker records the same way, and their one exposition.

Every consumer loop (steps and feedback, projectors, streamers) binds a
:class:`WorkerMetrics` to its role (``step:<flow>:<step>``, ``projector:<name>``,
``streamer:<flow>:<destination>``, ``feedback``) and reports per batch, never per
record: records in by outcome and topic, records out by target, batch size and
processing time, commit time (a Kafka transaction, a projector's Postgres
transaction, a streamer's offset commit), transaction aborts by cause, dead
letters, transient consume errors, and consumer lag per partition, sampled every
``LAG_EVERY_S`` from what the consumer already knows (the high watermark of its last
fetch minus its position: no request to the broker; an exact figure per group is
``leadflow offsets``).

Exposition: one per ``leadflow run``, at ``LEADFLOW_METRICS_PORT`` (0: off).
``leadflow run`` runs each role in its own process; rather than one port per
role process (which an operator would have to map, and which changes as flows
come and go), the supervisor puts prometheus_client in multiprocess mode for
its children (``PROMETHEUS_MULTIPROC_DIR``, a fresh directory per run) and
serves the sum of every child's files itself, each series labelled by its
role. A restarted role's counters carry on from its predecessor's (the dead
process's files stay), and its live gauges go with it (``mark_process_dead``).
A process outside the supervisor (a test, a bench) serves its own workers with
:func:`serve_metrics`. The streamer's own families (``streamers.metrics``,
``LEADFLOW_STREAMER_METRICS_PORT``) and the API's intake metrics keep their names
and endpoints.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

# Lag is sampled at most this often per worker: it costs a position and a watermark
# lookup per assigned partition, all local to the client.
LAG_EVERY_S = 5.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The workers' families, in a registry of their own: a process's exposition shows
# exactly them (not prometheus-client's process and platform collectors).
REGISTRY = CollectorRegistry()

_RECORDS_IN = Counter(
    "leadflow_worker_records_in",
    "Records consumed, by topic and by what became of them (processed, dead_lettered,"
    " rejected, written).",
    ("role", "topic", "outcome"),
    registry=REGISTRY,
)
_RECORDS_OUT = Counter(
    "leadflow_worker_records_out",
    "What a worker wrote: records per topic (steps), rows per projection (projectors),"
    " objects per destination (streamers).",
    ("role", "target"),
    registry=REGISTRY,
)
_BATCH_RECORDS = Histogram(
    "leadflow_worker_batch_records",
    "Records per batch a worker handled.",
    ("role",),
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
    registry=REGISTRY,
)
_BATCH_SECONDS = Histogram(
    "leadflow_worker_batch_seconds",
    "Time to handle a batch (decode, decide, encode, produce or write), commit excluded.",
    ("role",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
_COMMIT_SECONDS = Histogram(
    "leadflow_worker_commit_seconds",
    "Time to commit: a step's Kafka transaction, a projector's Postgres transaction,"
    " a streamer's offsets.",
    ("role",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
_ABORTS = Counter(
    "leadflow_worker_transaction_aborts",
    "Kafka transactions aborted (their input is read again), by cause.",
    ("role", "cause"),
    registry=REGISTRY,
)
_DEAD_LETTERS = Counter(
    "leadflow_worker_dead_letters",
    "Records set aside: a dead-letter topic's records, a projector's rejects, a streamer's"
    " dead-letter objects; by where they went.",
    ("role", "target"),
    registry=REGISTRY,
)
_CONSUME_ERRORS = Counter(
    "leadflow_worker_consume_errors",
    "Transient errors a consumer reported (librdkafka retries them), by kind.",
    ("role", "error"),
    registry=REGISTRY,
)
_LAG = Gauge(
    "leadflow_worker_consumer_lag_records",
    "Records between a worker's position and the end of its last fetch, per assigned"
    " partition (sampled).",
    ("role", "topic", "partition"),
    # The partition's latest sample wins, whichever process of the role took it.
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)


class WorkerMetrics:
    """One worker's series, bound to its role once so that reporting does no label parsing."""

    def __init__(
        self,
        role: str,
        *,
        lag_every_s: float = LAG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role = role
        self._batch_records = _BATCH_RECORDS.labels(role)
        self._batch_seconds = _BATCH_SECONDS.labels(role)
        self._commit_seconds = _COMMIT_SECONDS.labels(role)
        self._in: dict[tuple[str, str], Counter] = {}
        self._out: dict[str, Counter] = {}
        self._dead: dict[str, Counter] = {}
        self._lag_every_s = lag_every_s
        self._clock = clock
        self._lag_at = -math.inf
        self._lag_partitions: set[tuple[str, int]] = set()

    def batch(self, records: int, seconds: float) -> None:
        """A batch of ``records`` handled in ``seconds`` (its commit apart)."""
        self._batch_records.observe(records)
        self._batch_seconds.observe(seconds)

    def records_in(self, topic: str, outcome: str, count: int) -> None:
        if count:
            series = self._in.get((topic, outcome))
            if series is None:
                series = self._in[(topic, outcome)] = _RECORDS_IN.labels(self.role, topic, outcome)
            series.inc(count)

    def records_out(self, target: str, count: int) -> None:
        if count:
            series = self._out.get(target)
            if series is None:
                series = self._out[target] = _RECORDS_OUT.labels(self.role, target)
            series.inc(count)

    def dead_letters(self, target: str, count: int) -> None:
        if count:
            series = self._dead.get(target)
            if series is None:
                series = self._dead[target] = _DEAD_LETTERS.labels(self.role, target)
            series.inc(count)

    def committed(self, seconds: float) -> None:
        """A commit (Postgres transaction, offsets) that took ``seconds``."""
        self._commit_seconds.observe(seconds)

    def transaction_committed(self, seconds: float) -> None:
        self._commit_seconds.observe(seconds)

    def transaction_aborted(self, cause: str) -> None:
        _ABORTS.labels(self.role, cause).inc()

    def consume_error(self, name: str) -> None:
        _CONSUME_ERRORS.labels(self.role, name).inc()

    def sample_lag(self, consumer: Consumer) -> None:
        """Set the lag of each partition assigned to ``consumer``, at most every
        ``lag_every_s``; cheap enough to call once per batch."""
        now = self._clock()
        if now - self._lag_at < self._lag_every_s:
            return
        self._lag_at = now
        sampled: set[tuple[str, int]] = set()
        for tp in consumer.position(consumer.assignment()):
            if tp.offset < 0:
                continue  # nothing fetched yet: no position to measure from
            marks = consumer.get_watermark_offsets(tp, cached=True)
            if marks is None or marks[1] < 0:
                continue
            _LAG.labels(self.role, tp.topic, str(tp.partition)).set(max(marks[1] - tp.offset, 0))
            sampled.add((tp.topic, tp.partition))
        for topic, partition in self._lag_partitions - sampled:
            # Revoked: another member reports it now.
            _LAG.remove(self.role, topic, str(partition))
        self._lag_partitions = sampled


def serve_metrics(port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
    """Serve the workers' metrics at ``http://ADDR:PORT/metrics`` from a daemon thread
    (``server.shutdown()`` stops it): every process's under multiprocess mode, else this
    process's. Loopback by default: exposing them is a deployment's choice."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return start_http_server(port, addr=addr, registry=registry)


class ProcessesMetrics:
    """Multiprocess mode for a supervisor's children: set up before the first child starts
    (they read ``PROMETHEUS_MULTIPROC_DIR`` when they import prometheus_client), told of
    each child that exits, closed when the supervisor ends."""

    def __init__(self) -> None:
        given = os.environ.get(MULTIPROC_ENV)
        # A fresh directory unless the deployment chose one: another run's files would add up.
        self.directory = given or tempfile.mkdtemp(prefix="leadflow-run-metrics-")
        self._owned = given is None
        os.environ[MULTIPROC_ENV] = self.directory

    def process_exited(self, pid: int) -> None:
        """Drop the live gauges of a child that exited (its counters stay in the sums)."""
        prometheus_multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._owned:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(self.directory, ignore_errors=True)
