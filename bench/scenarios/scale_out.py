"""scale_out: 1, 2 and 4 processes of one filter step sharing a 6-partition topic.

Each process is ``leadflow run -f FLOW service-area`` (its own instance id, so its
own transactional id and static member), as deployed; a fresh flow per process
count gives each its own group. After a warm-up (every member joined and
committed), a burst of the shared input's events is written to the step's input
topic in one transaction and committed at once, so every member starts on a backlog (the
peak the "Scaling" sizing is about) and takes full batches; the figures are events /
(input fully committed - burst commit) and the
processes' summed CPU over the same interval, per event; and, measured for 3 s
before the burst, what the idle members burn, so the CPU per event can also be
given net of that fixed cost per process.

On a machine with fewer cores than processes the total cannot grow: the figure
that says whether scaling out works is CPU per event, which should stay flat
(no rebalancing storms, no per-process overhead that grows with the group).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.flows import FILTER_FLOW
from bench.inputs import accepted_events, fill, staged
from bench.scenarios.e2e import _start, _stop
from bench.scenarios.slow_buyer import cpu_seconds
from engine.flows import Flow, parse_flow
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.offsets import committed_offsets, list_offsets, topic_partitions
from engine.runtime.step_worker import prepare_topics, step_group
from engine.settings import Settings
from engine.topics import input_topic

PARTITIONS = 6
PROCESS_COUNTS = (1, 2, 4)
STEP = "service-area"
WARM_UP_EVENTS = 600  # 100 per partition: every member has records to commit
IDLE_S = 3.0


def _wait_committed(settings: Settings, flow: Flow, timeout_s: float, *, markers: int = 0) -> float:
    """Poll until the step's group has committed its whole input; the time it was seen.
    ``markers``: transaction markers at each partition's end, which take an offset but
    are no record a step reads (so its committed offset stops before them)."""
    admin = new_admin(settings)
    parts = topic_partitions(admin, f"^{input_topic(flow, STEP).replace('.', '[.]')}$")
    group = step_group(flow.id, STEP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ends = list_offsets(admin, parts, "latest")
        done = committed_offsets(admin, group, parts)
        if all(done.get(tp, -1) >= end - markers for tp, end in ends.items()):
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"group {group} did not commit its input in {timeout_s:.0f}s")


def _one_count(settings: Settings, params: dict[str, Any], processes: int) -> dict[str, float]:
    text = FILTER_FLOW.format(
        flow_id=f"b{params['run_id']}so{params['round']}n{processes}", partitions=PARTITIONS
    )
    flow = parse_flow(text, "bench-scale-out")
    prepare_topics(settings, flow)
    workdir = Path(tempfile.mkdtemp(prefix=f"leadflow-bench-scale-{processes}-"))
    flow_path = workdir / "flow.yaml"
    flow_path.write_text(text, encoding="utf-8")
    events = params["scale_events"]
    records = accepted_events(flow.id, WARM_UP_EVENTS + events)
    topic = input_topic(flow, STEP)
    procs = {}
    for index in range(processes):
        env = {
            **os.environ,
            # One instance id per process: its own transactional id and static member.
            "LEADFLOW_INSTANCE_ID": f"bench-{index}",
            "LEADFLOW_LOG_FORMAT": "json",
            "LEADFLOW_LOG_LEVEL": "WARNING",
        }
        argv = [sys.executable, "-m", "engine", "run", "-f", str(flow_path), STEP]
        procs[f"{STEP}-{index}"] = _start(argv, env, workdir / f"{STEP}-{index}.log")
    try:
        fill(settings, topic, records[:WARM_UP_EVENTS])
        _wait_committed(settings, flow, 180)
        pids = [p.pid for p in procs.values()]
        # What the members burn with nothing to do (polls, heartbeats, librdkafka's
        # threads): a cost per process and second, not per event.
        idle_before = sum(map(cpu_seconds, pids))
        time.sleep(IDLE_S)
        idle_per_s = (sum(map(cpu_seconds, pids)) - idle_before) / IDLE_S
        burst = staged(settings, topic, records[WARM_UP_EVENTS:], f"{flow.id}-burst")
        cpu_before, started = sum(map(cpu_seconds, pids)), time.monotonic()
        burst.commit_transaction(60)
        finished = _wait_committed(settings, flow, 900, markers=1)
        cpu = sum(map(cpu_seconds, pids)) - cpu_before
    finally:
        notes = _stop(procs, workdir)
    if notes:
        raise RuntimeError("; ".join(notes))
    elapsed = finished - started
    rate = events / elapsed
    return {
        f"p{processes}.idle_cpu_pct_per_process": idle_per_s * 100 / processes,
        f"p{processes}.busy_cpu_ms_per_event": (cpu - idle_per_s * elapsed) * 1000 / events,
        f"p{processes}.events_s": rate,
        f"p{processes}.events_s_per_process": rate / processes,
        f"p{processes}.cpu_ms_per_event": cpu * 1000 / events,
    }


def run_round(params: dict[str, Any]) -> dict[str, float]:
    settings = Settings()
    figures: dict[str, float] = {}
    for processes in PROCESS_COUNTS:
        figures.update(_one_count(settings, params, processes))
    figures["events_s_per_process"] = figures[f"p{PROCESS_COUNTS[-1]}.events_s_per_process"]
    return figures
