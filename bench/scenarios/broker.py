"""broker: what the broker itself does on this machine, with its own perf tools (JVM clients).

``ProducerPerformance`` and ``ConsumerPerformance`` from the same Kafka jars the
stack runs (``stack/kafka-tool.sh``), records of the input's mean size, on a
topic with the input's partition count: the ceiling every Python figure is
read against (as MB/s, since the record sizes match; the tools' MB is 2**20 bytes).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from bench.kafka_admin import create_topics
from engine.settings import Settings

TOOL = Path(__file__).resolve().parents[2] / "stack" / "kafka-tool.sh"
PRODUCER_PROPS = ("acks=all", "linger.ms=5", "compression.type=lz4")

# "100000 records sent, 51234.5 records/sec (35.12 MB/sec), ..."
_PRODUCED = re.compile(r"records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)")


def _tool(*args: str, timeout_s: float) -> str:
    argv = ["/bin/bash", str(TOOL), *args]
    # S603: the repository's own wrapper script with arguments built here, no shell.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=True)  # noqa: S603
    return done.stdout


def produce(bootstrap: str, topic: str, records: int, size: int) -> dict[str, float]:
    out = _tool(
        "producer-perf-test",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        *PRODUCER_PROPS,
        timeout_s=300,
    )
    match = _PRODUCED.findall(out)
    if not match:
        raise RuntimeError(f"no summary in ProducerPerformance output: {out[-200:]}")
    per_s, mb_s = match[-1]
    return {"produce_records_s": float(per_s), "produce_mb_s": float(mb_s)}


def consume(bootstrap: str, topic: str, records: int, group: str) -> dict[str, float]:
    out = _tool(
        "consumer-perf-test",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--group",
        group,
        "--timeout",
        "60000",
        timeout_s=300,
    )
    # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
    header, row = None, None
    for line in out.splitlines():
        if line.startswith("start.time"):
            header = [c.strip() for c in line.split(",")]
        elif header is not None and line.strip():
            row = [c.strip() for c in line.split(",")]
    if header is None or row is None:
        raise RuntimeError(f"no summary in ConsumerPerformance output: {out[-200:]}")
    values = dict(zip(header, row, strict=False))
    return {
        "consume_mb_s": float(values["MB.sec"]),
        "consume_records_s": float(values["nMsg.sec"]),
    }


def run_round(params: dict[str, Any]) -> dict[str, float]:
    topic = f"bench.{params['run_id']}.broker.r{params['round']}"
    create_topics(Settings(), [topic], params["partitions"])
    records, size = params["broker_records"], params["record_size"]
    figures = produce(params["bootstrap"], topic, records, size)
    group = f"bench.{params['run_id']}.broker.r{params['round']}"
    figures.update(consume(params["bootstrap"], topic, records, group))
    return figures
