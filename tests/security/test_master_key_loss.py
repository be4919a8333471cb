"""A lost (or damaged) master key file stops the engine at once with one clear line, and
nothing is written: a flow that seals never falls back to writing clear values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from engine.runtime.kafka.config import admin_config
from engine.settings import Settings

pytestmark = pytest.mark.stack

DEMO_FLOW = Path(__file__).parents[2] / "flows" / "demo.yaml"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot be read (FileNotFoundError)"), ("bm90IGEga2V5", "must hold 32 bytes")],
    ids=["file-gone", "file-damaged"],
)
def test_a_lost_master_key_file_stops_the_workers_with_one_line_and_writes_nothing(
    stack: Settings, unique_id: str, tmp_path: Path, content: str | None, message: str
) -> None:
    flow_file = tmp_path / "flow.yaml"
    text = DEMO_FLOW.read_text(encoding="utf-8").split("\ndestinations:")[0]
    flow_file.write_text(text.replace("id: demo\n", f"id: {unique_id}\n", 1), encoding="utf-8")
    key_file = tmp_path / "master.key"
    if content is not None:
        key_file.write_text(content, encoding="ascii")
    env = {k: v for k, v in os.environ.items() if k != "LEADFLOW_MASTER_KEY"}
    env.update(LEADFLOW_MASTER_KEY_FILE=str(key_file), LEADFLOW_DB_SCHEMA=unique_id)

    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", "-f", str(flow_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: LEADFLOW_MASTER_KEY_FILE {key_file}")
    assert message in lines[0]
    # Stopped before anything was made: not even the flow's topics exist.
    topics = AdminClient(admin_config(stack)).list_topics(timeout=10).topics
    assert [t for t in topics if unique_id in t] == []
