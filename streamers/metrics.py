"""Prometheus metrics of the streamers, per flow and destination: objects, bytes, retries, lag.

A registry of its own (not prometheus-client's global one), so several
streamer sets in one process (tests, ``leadflow run``) never clash over
names, and an exporter shows exactly the streamers' series.
Rates (objects/s, bytes/s) are the counters' ``rate()`` in Prometheus.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

_LABELS = ("flow", "destination")


class StreamerMetrics:
    """The streamers' metric families; ``for_destination`` binds one destination's series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.objects = Counter(
            "leadflow_streamer_objects",
            "Objects made durable; result=created, or exists (written by an earlier attempt).",
            (*_LABELS, "result"),
            registry=self.registry,
        )
        self.bytes = Counter(
            "leadflow_streamer_bytes",
            "Bytes of the objects made durable.",
            _LABELS,
            registry=self.registry,
        )
        self.retries = Counter(
            "leadflow_streamer_retries",
            "Failed writes, each retried after a backoff.",
            _LABELS,
            registry=self.registry,
        )
        self.lag = Gauge(
            "leadflow_streamer_lag_records",
            "Records of the flow's events topics not yet committed by the destination's group.",
            _LABELS,
            registry=self.registry,
        )
        self.active = Gauge(
            "leadflow_streamer_active",
            "1 while the destination is active, 0 while deactivated or disabled.",
            _LABELS,
            registry=self.registry,
        )

    def for_destination(self, flow_id: str, destination: str) -> DestinationMetrics:
        labels = {"flow": flow_id, "destination": destination}
        return DestinationMetrics(
            created=self.objects.labels(**labels, result="created"),
            existed=self.objects.labels(**labels, result="exists"),
            bytes=self.bytes.labels(**labels),
            retries=self.retries.labels(**labels),
            lag=self.lag.labels(**labels),
            active=self.active.labels(**labels),
        )


@dataclass(frozen=True, slots=True)
class DestinationMetrics:
    """One destination's series, bound once so the hot path does no label lookups."""

    created: Counter
    existed: Counter
    bytes: Counter
    retries: Counter
    lag: Gauge
    active: Gauge

    def written(self, size: int, created: bool) -> None:
        (self.created if created else self.existed).inc()
        self.bytes.inc(size)


def serve_metrics(
    metrics: StreamerMetrics, port: int, addr: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Expose ``metrics`` at ``http://ADDR:PORT/metrics`` from a daemon thread;
    ``server.shutdown()`` stops it. Loopback by default: exposing is a deployment choice."""
    return start_http_server(port, addr=addr, registry=metrics.registry)
