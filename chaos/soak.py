"""Soak mode: samples of each worker's RSS and each consumer group's lag over a long run,
to see memory stay flat and lag stay bounded at a steady rate."""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

from chaos import observe
from chaos.workers import WorkerPool
from engine.flows import Flow
from engine.settings import Settings

log = structlog.get_logger(__name__)


class Sampler:
    def __init__(self, settings: Settings, flow: Flow, pool: WorkerPool, every_s: float) -> None:
        self.settings, self.flow, self.pool, self.every_s = settings, flow, pool, every_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            rss = {role: w.rss_mb() for role, w in self.pool.workers.items()}
            try:
                lag: dict[str, int] | None = observe.group_lag(self.settings, self.flow)
            except Exception as exc:  # a broker restarting: this sample has no lag
                log.warning("lag sample failed", error=str(exc))
                lag = None
            self.samples.append(
                {
                    "t_s": round(time.monotonic() - self._t0, 1),
                    "rss_mb": {k: round(v, 1) if v is not None else None for k, v in rss.items()},
                    "lag": lag,
                }
            )


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per worker, RSS (MiB) at the first and last sample it was running and its peak; per
    group, the peak lag; and the peak and last total lag (samples without a lag aside)."""
    rss: dict[str, dict[str, float]] = {}
    for sample in samples:
        for role, mb in sample["rss_mb"].items():
            if mb is None:
                continue
            seen = rss.setdefault(role, {"start": mb, "end": mb, "max": mb})
            seen["end"], seen["max"] = mb, max(seen["max"], mb)
    lags = [s["lag"] for s in samples if s["lag"] is not None]
    groups = sorted({g for lag in lags for g in lag})
    return {
        "rss_mb": dict(sorted(rss.items())),
        "max_lag": {g: max(lag.get(g, 0) for lag in lags) for g in groups},
        "max_total_lag": max((sum(lag.values()) for lag in lags), default=None),
        "last_total_lag": sum(lags[-1].values()) if lags else None,
        "samples": len(samples),
        "samples_without_lag": len(samples) - len(lags),
    }
