"""slow_buyer: one recipient process against a buyer that answers like real ones.

The demo buyer in its own process (``python -m engine.demo.buyer``) answers after a
lognormal latency (median 300 ms, p99 2 s) and never answers 5 % of posts; the flow is a
source and one recipient (deadline 2.5 s) on 3 partitions, each its own
``leadflow run -f FLOW ROLE`` process, as deployed.

Sustained: a burst of leads published at once; leads/s = leads / (last ``flow.completed``
seen - first publish), and the recipient process's CPU seconds per lead over the burst.
Latency: leads offered at half that rate, open loop; submit -> ``flow.completed`` p99
beside the buyer's own p99 over the same leads (the events' ``wait_ms``: the buyer's
answer time, or the deadline for the posts it never answered). Duplicates: posts the buyer
saw twice under one idempotency key (none are expected without a crash).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.e2e_parts import Observer, Publisher, wait_for
from bench.scenarios.e2e import _free_port, _start, _stop
from bench.stats import percentile
from engine.flows import parse_flow
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import flow_event_topics
from schemas.codec import default_codec

MEDIAN_MS, P99_MS, TIMEOUT_FRACTION, DEADLINE_MS = 300, 2000, 0.05, 2500

FLOW = """
id: {flow_id}
name: Bench slow buyer
version: 1
topics: {{partitions: {partitions}, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form A
    settings:
      fields:
        - {{name: email, type: email, required: true}}
        - {{name: phone_1, type: phone, required: true}}
        - {{name: state, type: state, required: true}}
  - id: buyer
    kind: recipient
    name: Slow buyer
    settings:
      url: {buyer_url}/leads
      timeout_ms: {deadline_ms}
      mapping: {{email: lead.email, phone: lead.phone_1, state: lead.state}}
      accept: {{path: outcome, value: success}}
      price_path: price
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def buyer_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as answer:  # noqa: S310 - our buyer
        stats: dict[str, Any] = json.loads(answer.read())
        return stats


def run_round(params: dict[str, Any]) -> dict[str, Any]:
    run_id, partitions = params["run_id"], params["partitions"]
    flow_id = f"b{run_id}slow"
    port = _free_port()
    buyer_url = f"http://127.0.0.1:{port}"
    text = FLOW.format(
        flow_id=flow_id, partitions=partitions, buyer_url=buyer_url, deadline_ms=DEADLINE_MS
    )
    flow = parse_flow(text, "bench-slow-buyer")
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-slow-"))
    flow_path = workdir / "flow.yaml"
    flow_path.write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "LEADFLOW_INSTANCE_ID": "bench",
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_LOG_LEVEL": "WARNING",
    }
    settings = Settings()
    prepare_topics(settings, flow)
    buyer = [
        sys.executable, "-m", "engine.demo.buyer", "--port", str(port), "--no-mix",
        "--median-ms", str(MEDIAN_MS), "--p99-ms", str(P99_MS),
        "--timeout-fraction", str(TIMEOUT_FRACTION), "--hold-s", "10", "--seed", "7",
    ]  # fmt: skip
    procs = {"buyer-server": _start(buyer, env, workdir / "buyer.log")}
    leadflow = [sys.executable, "-m", "engine", "run", "-f", str(flow_path)]
    for role in ("source", "buyer"):
        procs[role] = _start([*leadflow, role], env, workdir / f"{role}.log")
    observer = Observer(settings, flow_event_topics(flow), partitions)
    publisher = Publisher(settings, flow_id)
    notes = [f"worker logs: {workdir}"]
    try:
        observer.start()
        publisher.publish(50)  # warm-up: groups joined, transactions initialised
        publisher.flush()
        wait_for(observer, 50, timeout_s=120)
        observer.reset()
        cpu_before = cpu_seconds(procs["buyer"].pid)
        started = time.monotonic()
        publisher.publish(params["slow_leads"])
        publisher.flush()
        wait_for(observer, params["slow_leads"], timeout_s=600)
        seen = observer.reset()
        elapsed = max(seen.completed.values()) - started
        cpu_ms_per_lead = (
            (cpu_seconds(procs["buyer"].pid) - cpu_before) * 1000 / len(seen.completed)
        )
        leads_s = params["slow_leads"] / elapsed
        latency = _latency_phase(publisher, observer, leads_s / 2, params["slow_seconds"])
        stats = buyer_stats(buyer_url)
    finally:
        observer.stop.set()
        notes.extend(_stop(procs, workdir))
    return {
        "leads_s": leads_s,
        "cpu_ms_per_lead": cpu_ms_per_lead,
        **latency,
        "e2e_p99_over_buyer_p99_ms": latency["latency_p99_ms"] - latency["buyer_p99_ms"],
        "buyer_duplicates": stats["duplicates"],
        "buyer_peak_in_flight": stats["peak_in_flight"],
        "notes": notes,
    }


def _latency_phase(
    publisher: Publisher, observer: Observer, rate: float, seconds: float
) -> dict[str, float]:
    observer.reset(keep_values=True)
    publisher.sent_at.clear()
    began, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            publisher.publish(due)
            sent += due
        time.sleep(0.002)
    publisher.flush()
    wait_for(observer, sent, timeout_s=120)
    seen = observer.reset()
    e2e = [
        (seen.completed[k] - t) * 1000 for k, t in publisher.sent_at.items() if k in seen.completed
    ]
    codec = default_codec()
    waits, overheads = [], []
    for value in seen.values:
        event = codec.decode(value)
        if event["type"].startswith("recipient."):
            waits.append(float(event["wait_ms"]))
            overheads.append(float(event["overhead_ms"]))
    return {
        "offered_rate": rate,
        "latency_p50_ms": percentile(e2e, 50),
        "latency_p99_ms": percentile(e2e, 99),
        "buyer_p50_ms": percentile(waits, 50),
        "buyer_p99_ms": percentile(waits, 99),
        "overhead_ms_median": percentile(overheads, 50),
    }
