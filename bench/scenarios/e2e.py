"""e2e: the whole flow under load - five step workers (source, enhancement, filter, two
buyers; the last step a lead reaches records ``flow.completed``), the timeline projector and
the flow's streamer, each its own ``leadflow run -f FLOW ROLE`` process, as deployed.

Sustained rate: a burst of leads published at once, rate = leads / (last
``flow.completed`` seen - first publish), once per round on the same workers.
Latency: leads offered at half the sustained median, open loop, for a fixed time;
submit (produce call) -> ``flow.completed`` seen by a read_committed consumer. Then
the same at a tenth of it (``quiet_*``), with the machine's busy share of each phase:
the two tell the pipeline's own latency from the queueing for two shared cores.
The buyer and phone check are ``leadflow buyer`` (engine/demo/buyer.py) in its own process.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.e2e_parts import Observer, Publisher, RssSampler, wait_for
from bench.flows import E2E_FLOW, e2e_flow
from bench.stats import percentile
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import flow_event_topics
from projectors.store import connect
from schemas.codec import default_codec

SERVICE_ROLES = ("projector", "streamer")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # S603: this interpreter running leadflow's own CLI, arguments built here, no shell.
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603


def _stop(
    procs: dict[str, subprocess.Popen[bytes]], workdir: Path, quiet: tuple[str, ...] = ()
) -> list[str]:
    """Terminate the scenario's processes (kill what ignores that for 30 s); a note for each
    one that had already exited, except the ``quiet`` ones, which may."""
    notes = [
        f"{role} exited early ({proc.returncode}): see {workdir}/{role}.log"
        for role, proc in procs.items()
        if proc.poll() is not None and role not in quiet
    ]
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return notes


def _cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, total) CPU ticks so far (/proc/stat's first line)."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def _latency_phase(
    publisher: Publisher, observer: Observer, rate: float, seconds: float
) -> dict[str, Any]:
    busy_before, total_before = _cpu_ticks()
    observer.reset(keep_values=True)
    publisher.sent_at.clear()
    started, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            publisher.publish(due)
            sent += due
        time.sleep(0.002)
    publisher.flush()
    wait_for(observer, sent, timeout_s=120)
    busy, total = _cpu_ticks()
    seen = observer.reset()
    latencies = [
        (seen.completed[k] - t) * 1000 for k, t in publisher.sent_at.items() if k in seen.completed
    ]
    overhead: dict[str, list[int]] = defaultdict(list)
    # Where the latency goes: how long each step's input waited in Kafka (the previous
    # step's transaction commit plus the fetch), per step, at the 95th percentile.
    lag: dict[str, list[float]] = defaultdict(list)
    # And how long each calling step waited on its service or buyer (the local demo buyer
    # shares the two cores with the workers: its answers are part of the latency).
    wait: dict[str, list[float]] = defaultdict(list)
    codec = default_codec()
    for value in seen.values:
        event = codec.decode(value)
        overhead[event["step_id"]].append(event["overhead_ms"])
        lag[event["step_id"]].append(event["lag_ms"])
        if event.get("wait_ms"):
            wait[event["step_id"]].append(event["wait_ms"])
    every = [ms for values in overhead.values() for ms in values]
    return {
        "offered_rate": rate,
        "machine_busy_pct": (busy - busy_before) * 100 / max(1, total - total_before),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "latency_p99_ms": percentile(latencies, 99),
        "overhead_ms_median": statistics.median(every) if every else 0.0,
        "overhead_ms_median_by_step": {s: statistics.median(v) for s, v in overhead.items()},
        "lag_ms_p95_by_step": {s: percentile(v, 95) for s, v in lag.items()},
        "wait_ms_p95_by_step": {s: percentile(v, 95) for s, v in wait.items()},
    }


def _projected(settings: Settings, flow_id: str) -> int:
    """Events of the flow in the projection: the projector kept up (or how far it got)."""
    with connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE flow_id = %s", (flow_id,)).fetchone()
    return int(row[0]) if row else 0


def run_round(params: dict[str, Any]) -> dict[str, Any]:
    run_id, partitions = params["run_id"], params["partitions"]
    flow_id = f"b{run_id}e2e"
    buyer_port = _free_port()
    buyer_url = f"http://127.0.0.1:{buyer_port}"
    flow = e2e_flow(flow_id, partitions, buyer_url)
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-e2e-"))
    flow_path = workdir / "flow.yaml"
    flow_path.write_text(
        E2E_FLOW.format(flow_id=flow_id, partitions=partitions, buyer_url=buyer_url),
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": f"b{run_id}e",
        "LEADFLOW_PROJECTOR_PATTERN": rf"^leadflow\.{flow_id}\.events\..+$",
        "LEADFLOW_INSTANCE_ID": "bench",
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_LOG_LEVEL": "WARNING",
    }
    settings = Settings(db_schema=env["LEADFLOW_DB_SCHEMA"])
    prepare_topics(settings, flow)
    leadflow = [sys.executable, "-m", "engine"]
    migrate = [*leadflow, "db", "migrate"]  # the destination state tables too
    subprocess.run(migrate, env=env, check=True, capture_output=True)  # noqa: S603 - as above
    procs = {
        "buyer": _start([*leadflow, "buyer", "--port", str(buyer_port)], env, workdir / "buyer.log")
    }
    roles = [s.id for s in flow.steps] + list(SERVICE_ROLES)
    for role in roles:
        procs[role] = _start(
            [*leadflow, "run", "-f", str(flow_path), role], env, workdir / f"{role}.log"
        )
    sampler = RssSampler({role: procs[role].pid for role in roles})
    observer = Observer(settings, flow_event_topics(flow), partitions)
    publisher = Publisher(settings, flow_id)
    notes: list[str] = [f"worker logs: {workdir}"]
    try:
        sampler.start()
        observer.start()
        publisher.publish(100)  # warm-up: every group joined, every transaction initialised
        publisher.flush()
        wait_for(observer, 100, timeout_s=120)
        sustained, mb_s = [], []
        for _ in range(params["rounds"]):
            observer.reset()
            started = time.monotonic()
            publisher.publish(params["e2e_leads"])
            publisher.flush()
            wait_for(observer, params["e2e_leads"], timeout_s=600)
            seen = observer.reset()
            elapsed = max(seen.completed.values()) - started
            sustained.append(params["e2e_leads"] / elapsed)
            mb_s.append(seen.bytes_seen / elapsed / 2**20)
        latency = _latency_phase(
            publisher, observer, statistics.median(sustained) / 2, params["latency_seconds"]
        )
        quiet = _latency_phase(
            publisher, observer, statistics.median(sustained) / 10, params["latency_seconds"]
        )
        latency.update({f"quiet_{k}": v for k, v in quiet.items()})
        latency["projected_events"] = _projected(settings, flow_id)
    finally:
        observer.stop.set()
        sampler.stop.set()
        notes.extend(_stop(procs, workdir, quiet=("buyer",)))
    return {
        "leads_s": sustained,
        "mb_s": mb_s,
        **latency,
        "rss_peak_mb": sampler.peak_mb,
        "notes": notes,
    }
