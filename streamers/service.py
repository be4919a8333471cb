"""A flow's streamers as a service: each enabled destination observed (lifecycle, status,
metrics) while ``run_streamers`` moves its events.

What ``leadflow run``'s ``streamer`` role and ``python -m streamers`` run, so a
destination that fails past its deactivation policy is deactivated (and
resumes from its position when enabled again) however the streamer was started,
and its objects, bytes, retries and lag are counted.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import structlog
from confluent_kafka import KafkaException

from engine.flows import Flow
from engine.objects.contract import DEFAULT_THREADS
from engine.runtime.kafka.clients import new_admin
from engine.settings import Settings
from streamers.destination_observer import observers_for
from streamers.metrics import StreamerMetrics, serve_metrics
from streamers.streamer import Streamer, consumer_group_id, run_streamers
from streamers.topic_offsets import flow_partitions, group_lag

log = structlog.get_logger(__name__)

LAG_EVERY_S = 15.0


def stream_flow(
    settings: Settings,
    flow: Flow,
    stop: threading.Event,
    *,
    threads: int = DEFAULT_THREADS,
    consumer_overrides: Mapping[str, Any] | None = None,
    metrics: StreamerMetrics | None = None,
    metrics_port: int | None = None,
) -> list[Streamer]:
    """Stream ``flow`` to its enabled destinations until ``stop``; returns the streamers.

    ``metrics_port`` serves the metrics at ``http://127.0.0.1:PORT/metrics``.
    """
    metrics = metrics or StreamerMetrics()
    server = serve_metrics(metrics, metrics_port)[0] if metrics_port else None
    observers = observers_for(settings, flow, metrics=metrics)
    done = threading.Event()
    lag = threading.Thread(
        target=_measure_lag, args=(settings, flow, metrics, done), name="streamer-lag", daemon=True
    )
    lag.start()
    try:
        return run_streamers(
            settings,
            flow,
            stop,
            threads=threads,
            consumer_overrides=consumer_overrides,
            observers=observers,
        )
    finally:
        done.set()
        lag.join(10)
        for observer in observers.values():
            observer.close()
        if server is not None:
            server.shutdown()
            server.server_close()


def measure_lag_once(settings: Settings, flow: Flow, metrics: StreamerMetrics) -> None:
    """Set each enabled destination's lag gauge from its group's committed offsets."""
    admin = new_admin(settings)
    parts = flow_partitions(admin, flow.id)
    for destination in flow.destinations:
        if destination.enabled:
            behind = group_lag(settings, admin, consumer_group_id(flow.id, destination), parts)
            metrics.for_destination(flow.id, destination.key).lag.set(behind)


def _measure_lag(
    settings: Settings, flow: Flow, metrics: StreamerMetrics, done: threading.Event
) -> None:
    # Lag is the gap between the topics' heads and the group's commits: it grows
    # while a store is down even though the streamer writes nothing, which is
    # exactly when an operator needs to see it.
    while not done.wait(LAG_EVERY_S):
        try:
            measure_lag_once(settings, flow, metrics)
        except KafkaException as exc:
            log.warning("lag not measured", flow=flow.id, error=str(exc.args[0]))
