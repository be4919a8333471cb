"""The faults a run injects, and a seeded schedule of when.

Faults run one at a time on one thread, in schedule order, so two of them never take
down two brokers at once (with min ISR 2, that would only stall writes: a pause, not a
test of anything more). Each injected fault is recorded with when it happened and how
long the outage lasted.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from chaos.services import ChaosServices
from chaos.workers import WorkerPool

log = structlog.get_logger(__name__)

ALL_FAULTS = (
    "worker_kill",
    "broker_kill",
    "broker_restart",
    "postgres_restart",
    "store_outage",
    "poison_burst",
    "slow_buyer",
    "inflight_kill",
)
# Faults on shared machinery (brokers, Postgres, the stores): on their own thread, in order.
SERVICE_FAULTS = ("broker_kill", "postgres_restart", "store_outage", "broker_restart")


@dataclass
class FaultRecord:
    kind: str
    at_s: float
    detail: str
    duration_s: float = 0.0


@dataclass
class FaultPlan:
    """What to inject: ``kills`` worker kills, ``store_outage_s`` of S3+Azure downtime..."""

    faults: tuple[str, ...]
    kills: int
    store_outage_s: float
    broker_down_s: float = 12.0


@dataclass
class Injector:
    services: ChaosServices
    pool: WorkerPool
    rng: random.Random
    # Called for poison_burst / slow_buyer / inflight_kill: submissions the workload makes
    # (and, for inflight_kill, the kill it times against the buyer's calls in flight).
    bursts: dict[str, Callable[[], str]]
    started: float = field(default_factory=time.monotonic)
    records: list[FaultRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _record(self, kind: str, detail: str, began: float) -> None:
        rec = FaultRecord(kind, round(began - self.started, 1), detail)
        rec.duration_s = round(time.monotonic() - began, 1)
        self.records.append(rec)
        log.info("fault injected", kind=kind, detail=detail, at_s=rec.at_s)

    def inject(self, kind: str, plan: FaultPlan) -> None:
        began = time.monotonic()
        if kind == "worker_kill":
            role = self.rng.choice(sorted(self.pool.workers))
            killed = self.pool.kill9(role)
            self._record(kind, f"kill -9 {role}" + ("" if killed else " (was not running)"), began)
        elif kind == "broker_kill":
            node = self.rng.choice([1, 2, 3])
            self.services.kill_broker(node)
            time.sleep(plan.broker_down_s)
            lagging = self.services.start_broker(node)
            self._record(kind, f"kill -9 broker {node}, started again{_sync(lagging)}", began)
        elif kind == "broker_restart":
            node = self.rng.choice([1, 2, 3])
            lagging = self.services.restart_broker(node)
            self._record(kind, f"SIGTERM broker {node}, started again{_sync(lagging)}", began)
        elif kind == "postgres_restart":
            self.services.stop("postgres")
            self.services.start("postgres")
            self._record(kind, "pg_ctl stop -m fast, start", began)
        elif kind == "store_outage":
            self.services.stop("s3", "azure")
            time.sleep(plan.store_outage_s)
            self.services.start("s3", "azure")
            self._record(kind, f"S3 and Azure stopped for {plan.store_outage_s:.0f}s", began)
        else:
            self._record(kind, self.bursts[kind](), began)

    def run(
        self, schedule: list[tuple[float, str]], plan: FaultPlan, stop: threading.Event
    ) -> None:
        for at, kind in schedule:
            if stop.wait(max(0.0, self.started + at - time.monotonic())):
                return
            try:
                self.inject(kind, plan)
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                self.errors.append(f"{kind}: {exc}")
                log.error("fault failed", kind=kind, error=str(exc))


def _sync(lagging: list[str]) -> str:
    """The fault's detail on the cluster's state after it: whole again, or what lags."""
    if not lagging:
        return ", replicas in sync"
    return f", {len(lagging)} partitions still out of sync ({', '.join(lagging[:3])})"


def schedule(rng: random.Random, plan: FaultPlan, window_s: float) -> list[tuple[float, str]]:
    """Seeded moments within the submission window. The broker kill, broker restart,
    Postgres restart and store outage each get their own slice of the window so they do not
    overlap one another; worker kills and bursts land anywhere."""
    out: list[tuple[float, str]] = []
    exclusive = [f for f in SERVICE_FAULTS if f in plan.faults]
    for n, kind in enumerate(exclusive):
        lo = window_s * (0.1 + 0.8 * n / len(exclusive))
        out.append((lo + rng.uniform(0, window_s * 0.1), kind))
    if "worker_kill" in plan.faults:
        out += [(rng.uniform(0.05, 0.95) * window_s, "worker_kill") for _ in range(plan.kills)]
    for burst in ("poison_burst", "slow_buyer", "inflight_kill"):
        if burst in plan.faults:
            out.append((rng.uniform(0.2, 0.7) * window_s, burst))
    return sorted(out)


def summary(records: list[FaultRecord]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.kind] = counts.get(rec.kind, 0) + 1
    return counts
