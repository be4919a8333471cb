"""auction: a ping-post auction among five buyers, each a demo buyer in its own process.

Each buyer (``python -m engine.demo.buyer``) answers pings and posts after a lognormal
latency (median 120 ms, p99 500 ms) and bids a price from the lead's postal code salted
per buyer, so bids differ between buyers. The flow is a source and one auction step (bid
window 750 ms) on 3 partitions, each its own ``leadflow run -f FLOW ROLE`` process, as
deployed. Leads are offered open loop at a steady rate.

From the events, per sold lead: accepted -> winner posted is the winning
``recipient.delivered``'s time minus its ``source.accepted``'s (both stamped when the
step wrote them), and post latency is that delivery's answer time (response minus
request timestamp). The target: p99 accepted -> winner posted within the bid window plus
the post latency p99 (``posted_p99_over_budget_ms`` <= 0).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.e2e_parts import Observer, Publisher, wait_for
from bench.scenarios.e2e import _free_port, _start, _stop
from bench.scenarios.slow_buyer import buyer_stats
from bench.stats import percentile
from engine.flows import parse_flow
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import flow_event_topics
from schemas.codec import default_codec

BUYERS, MEDIAN_MS, P99_MS, WINDOW_MS, DEADLINE_MS = 5, 120, 500, 750, 2500

FLOW = """
id: {flow_id}
name: Bench auction
version: 1
topics: {{partitions: {partitions}, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form A
    settings:
      fields:
        - {{name: first_name}}
        - {{name: last_name}}
        - {{name: email, type: email, required: true}}
        - {{name: phone_1, type: phone, required: true}}
        - {{name: state, type: state, required: true}}
        - {{name: postal_code, type: postal_code}}
  - id: auction
    kind: auction
    name: Five buyers
    settings:
      bid_window_ms: {window_ms}
      timeout_ms: {deadline_ms}
      buyers:
{buyers}
"""
BUYER = """        - id: buyer{n}
          name: Buyer {n}
          ping_url: {url}/ping
          post_url: {url}/leads
          ping_fields: [state, postal_code]
"""


def run_round(params: dict[str, Any]) -> dict[str, Any]:
    run_id, partitions = params["run_id"], params["partitions"]
    flow_id = f"b{run_id}auction"
    ports = [_free_port() for _ in range(BUYERS)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    buyers = "".join(BUYER.format(n=n, url=url) for n, url in enumerate(urls))
    text = FLOW.format(
        flow_id=flow_id,
        partitions=partitions,
        window_ms=WINDOW_MS,
        deadline_ms=DEADLINE_MS,
        buyers=buyers,
    )
    flow = parse_flow(text, "bench-auction")
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-auction-"))
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
    procs = {}
    for n, port in enumerate(ports):
        buyer = [
            sys.executable, "-m", "engine.demo.buyer", "--port", str(port), "--no-mix",
            "--median-ms", str(MEDIAN_MS), "--p99-ms", str(P99_MS), "--seed", str(n),
            "--bid-salt", f"buyer{n}",
        ]  # fmt: skip
        procs[f"buyer-server-{n}"] = _start(buyer, env, workdir / f"buyer{n}.log")
    leadflow = [sys.executable, "-m", "engine", "run", "-f", str(flow_path)]
    for role in ("source", "auction"):
        procs[role] = _start([*leadflow, role], env, workdir / f"{role}.log")
    observer = Observer(settings, flow_event_topics(flow), partitions)
    publisher = Publisher(settings, flow_id)
    notes = [f"worker logs: {workdir}"]
    try:
        observer.start()
        publisher.publish(20)  # warm-up: groups joined, transactions initialised
        publisher.flush()
        wait_for(observer, 20, timeout_s=120)
        figures = _offered(publisher, observer, params["auction_rate"], params["auction_seconds"])
        stats = [buyer_stats(url) for url in urls]
    finally:
        observer.stop.set()
        notes.extend(_stop(procs, workdir))
    figures["buyer_duplicates"] = float(sum(s["duplicates"] for s in stats))
    return {**figures, "notes": notes}


def _offered(
    publisher: Publisher, observer: Observer, rate: float, seconds: float
) -> dict[str, float]:
    """Leads at ``rate`` for ``seconds``, open loop; the auction's figures from their events."""
    observer.reset(keep_values=True)
    began, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            publisher.publish(due)
            sent += due
        time.sleep(0.002)
    publisher.flush()
    wait_for(observer, sent, timeout_s=120)
    return auction_figures(observer.reset().values, rate)


def _ms(value: datetime | int) -> float:
    """An event's timestamp in epoch ms (the codec gives timestamp-millis as datetimes)."""
    return value.timestamp() * 1000 if isinstance(value, datetime) else float(value)


def auction_figures(values: list[bytes], rate: float) -> dict[str, float]:
    """What the auction's events say: accepted -> winner posted, post latency, pings' fates."""
    codec = default_codec()
    accepted: dict[str, float] = {}
    delivered: dict[str, dict[str, Any]] = {}
    pings = late = 0
    for value in values:
        event = codec.decode(value)
        kind = event["type"]
        if kind == "source.accepted":
            accepted[event["lead_id"]] = _ms(event["timestamp"])
        elif kind == "recipient.delivered":
            delivered[event["lead_id"]] = event
        elif kind == "recipient.pinged":
            pings += 1
            late += any(v == "late" for v in event["appended"].values())
    posted = [
        _ms(e["timestamp"]) - accepted[lead] for lead, e in delivered.items() if lead in accepted
    ]
    post = [
        _ms(e["response"]["timestamp"]) - _ms(e["request"]["timestamp"])
        for e in delivered.values()
        if e["response"] is not None and e["request"] is not None
    ]
    posted_p99, post_p99 = percentile(posted, 99), percentile(post, 99)
    return {
        "offered_rate": rate,
        "leads_accepted": float(len(accepted)),
        "leads_sold": float(len(delivered)),
        "posted_p50_ms": percentile(posted, 50),
        "posted_p99_ms": posted_p99,
        "post_p50_ms": percentile(post, 50),
        "post_p99_ms": post_p99,
        "posted_p99_over_budget_ms": posted_p99 - (WINDOW_MS + post_p99),
        "late_ping_share": late / pings if pings else 0.0,
    }
