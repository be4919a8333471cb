"""Every command that talks to Kafka, with nothing listening at the bootstrap address:
one line naming the address, a non-zero exit, no traceback and no librdkafka log lines.

Before, ``flow list`` and ``streamer status`` took ~10 s and printed hundreds of
librdkafka lines and a traceback, ``submit`` 30 s, and ``offsets`` printed an empty
table with exit 0. Each command runs as the operator runs it (a process, stderr a
pipe, 80 columns). Needs no service: Kafka is the one thing missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FLOW_FILE = str(Path(__file__).parents[1] / "flows" / "basic.yaml")
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1: every connection is refused

COMMANDS = [
    ["flow", "list"],
    ["flow", "apply", FLOW_FILE],
    ["flow", "delete", "demo"],
    ["submit", "-f", FLOW_FILE, "--fake", "1"],
    ["feedback", "01JB0000000000000000000000", "--type", "conversion"],
    ["offsets"],
    ["offsets", "--group-prefix", "leadflow.demo."],
    ["offsets", "reset", "leadflow.demo.step.source", "--to-earliest"],
    ["streamer", "status"],
    ["streamer", "status", "-f", FLOW_FILE],
    ["streamer", "verify", "demo"],
    ["streamer", "enable", "demo", "archive"],
    ["streamer", "disable", "demo", "archive", "-f", FLOW_FILE],
    ["streamer", "backfill", "demo", "archive", "--from", "2026-01-01"],
    ["replay", "timeline"],
    ["run"],
    ["run", "demo:source"],
    ["run", "-f", FLOW_FILE, "source"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_command_says_kafka_is_not_reachable_in_one_line(args: list[str]) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": NOWHERE,
        "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": NOWHERE,
        "COLUMNS": "80",
    }
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails here; the probe itself answers on the refusal
        check=False,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    # The probe ended on librdkafka's report of the refusal, not on its timeout.
    assert lines == [
        f"error: Kafka at {NOWHERE} is not reachable "
        f"(Connect to ipv4#{NOWHERE} failed: Connection refused)"
    ]
    assert done.stdout == ""
