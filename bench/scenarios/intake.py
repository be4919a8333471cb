"""intake: ``POST /flows/{flow}/sources/{source}`` under a fixed offered rate.

``leadflow serve --workers 2`` on a free port and the flow's step workers (source
and filter, one ``leadflow run -f FLOW ROLE`` process each) serve a flow whose
source takes leads over HTTP, the key by env reference, each POST answered with
the source's verdict. ``bench/intake_load.py`` - a second process, open loop -
offers requests at a fixed rate for a fixed time; its requests/s achieved,
latency p50/p99 (request sent -> answer read) and status counts are the figures.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.flows import INTAKE_KEY_ENV, intake_flow, intake_flow_text
from bench.scenarios.e2e import _free_port, _start, _stop
from engine.runtime.registry import apply_flow, delete_flow
from engine.settings import Settings

LOAD_TOOL = Path(__file__).resolve().parents[1] / "intake_load.py"
SERVE_WORKERS = 2


def _wait_ready(url: str, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for role, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{role} exited ({proc.returncode}) before the server was up")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"leadflow serve not up in {timeout_s}s")


def _warm_up(submit_url: str, key: str, timeout_s: float) -> None:
    """Until every API worker answers 201: its waiter consumer and producer started, the
    flow's topics tracked, the step workers' groups joined."""
    deadline, answered = time.monotonic() + timeout_s, 0
    with httpx.Client(timeout=timeout_s) as client:
        while answered < 4 * SERVE_WORKERS:  # new connections: spread over the workers
            if time.monotonic() > deadline:
                raise TimeoutError(f"intake warm-up: {answered} answers in {timeout_s}s")
            lead = {"email": f"warm{answered}@example.com", "state": "TX", "tcpa_consent": "yes"}
            answer = client.post(
                submit_url, json=lead, headers={"X-API-Key": key, "Connection": "close"}
            )
            if answer.status_code == 201:
                answered += 1


def run_round(params: dict[str, Any]) -> dict[str, Any]:
    run_id, partitions = params["run_id"], params["partitions"]
    flow_id = f"b{run_id}in"
    flow = intake_flow(flow_id, partitions)
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-intake-"))
    flow_path = workdir / "flow.yaml"
    flow_path.write_text(intake_flow_text(flow_id, partitions), encoding="utf-8")
    key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        INTAKE_KEY_ENV: key,
        "LEADFLOW_DB_SCHEMA": f"b{run_id}i",
        "LEADFLOW_INSTANCE_ID": "bench",
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_LOG_LEVEL": "WARNING",
    }
    settings = Settings(db_schema=env["LEADFLOW_DB_SCHEMA"])
    apply_flow(settings, flow)  # the API finds flows in the registry
    leadflow = [sys.executable, "-m", "engine"]
    subprocess.run([*leadflow, "db", "migrate"], env=env, check=True, capture_output=True)  # noqa: S603 - our own CLI
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    submit_url = f"{base}/flows/{flow_id}/sources/source"
    serve = [*leadflow, "serve", "--port", str(port), "--workers", str(SERVE_WORKERS)]
    procs = {"serve": _start(serve, env, workdir / "serve.log")}
    for step in flow.steps:
        procs[step.id] = _start(
            [*leadflow, "run", "-f", str(flow_path), step.id], env, workdir / f"{step.id}.log"
        )
    notes = [f"server and worker logs: {workdir}"]
    try:
        _wait_ready(base, procs, timeout_s=60)
        _warm_up(submit_url, key, timeout_s=60)
        load = [
            sys.executable,
            str(LOAD_TOOL),
            "--url",
            submit_url,
            "--key",
            key,
            "--rate",
            str(params["intake_rate"]),
            "--seconds",
            str(params["intake_seconds"]),
            "--timeout",
            "30",
        ]
        done = subprocess.run(  # noqa: S603 - our own interpreter and tool
            load, capture_output=True, text=True, timeout=params["intake_seconds"] + 90, check=True
        )
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        notes.extend(_stop(procs, workdir))
        delete_flow(settings, flow_id)
    latency = out["latency_ms"]
    return {
        "requests_s": out["achieved_rps"],
        "offered_rps": out["offered_rps"],
        "requests": out["requests"],
        "latency_p50_ms": latency["p50"],
        "latency_p99_ms": latency["p99"],
        "latency_max_ms": latency["max"],
        "status": out["status"],
        "notes": notes,
    }
