"""A flow's streamers as a service: each enabled destination observed (lifecycle, status,
metrics) while ``run_streamers`` moves its events.

What ``leadflow run``'s ``streamer`` role and ``python -m streamers`` run, so a
destination that fails past its deactivation policy is deactivated (and
resumes from its position when enabled again) however the streamer was started.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from engine.flows import Flow
from engine.settings import Settings
from streamers.destination_observer import observers_for
from streamers.destinations import DEFAULT_THREADS
from streamers.metrics import StreamerMetrics
from streamers.worker import Streamer, run_streamers


def stream_flow(
    settings: Settings,
    flow: Flow,
    stop: threading.Event,
    *,
    threads: int = DEFAULT_THREADS,
    consumer_overrides: Mapping[str, Any] | None = None,
    metrics: StreamerMetrics | None = None,
) -> list[Streamer]:
    """Stream ``flow`` to its enabled destinations until ``stop``; returns the streamers."""
    observers = observers_for(settings, flow, metrics=metrics)
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
        for observer in observers.values():
            observer.close()
