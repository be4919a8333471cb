"""kill -9 the projector mid-stream, again and again: every event in Postgres exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from engine.runtime.kafka.config import producer_config
from engine.settings import Settings
from projectors.queries import count_completed
from projectors.store import Connection
from tests.projectors.support import (
    checkpoints,
    create_source_topic,
    event_ids,
    flow_pattern,
    high_watermarks,
    lead_events,
    produce,
    scalar,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

REPO = Path(__file__).parents[2]
KILLS = 3

# kill -9 at chosen moments needs the machine to itself to hit them (make test runs the
# serial tests alone, after the rest).
pytestmark = [pytest.mark.stack, pytest.mark.serial]


def start_projector(settings: Settings, flow_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEADFLOW_DB_SCHEMA": settings.db_schema, "LEADFLOW_LOG_FORMAT": "json"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "projectors",
                "--pattern", flow_pattern(flow_id),
                "--name", f"timeline-{flow_id}",
                # Small, frequent transactions, so that kills land between and inside them.
                "--batch-size", "100", "--batch-ms", "20",
                # Static membership: a restarted process takes its predecessor's
                # partitions at once instead of waiting out its session timeout.
                "-X", f"group.instance.id=crash-{flow_id}",
            ],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_kill_9_mid_stream_loses_and_duplicates_no_event(
    pg_settings: Settings, db: Connection, unique_id: str, tmp_path: Path
) -> None:
    topic = create_source_topic(pg_settings, unique_id)
    events = lead_events(unique_id, leads=300)
    chunks = [events[i : i + 50] for i in range(0, len(events), 50)]
    log = tmp_path / "projector.log"

    def produce_slowly() -> None:
        producer = Producer(producer_config(pg_settings))
        for chunk in chunks:
            produce(pg_settings, topic, chunk, producer)
            time.sleep(0.1)

    def projected() -> int:
        return scalar(db, "SELECT count(*) FROM events")

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    proc = start_projector(pg_settings, unique_id, log)
    try:
        projected_at_kill = []
        for _ in range(KILLS):
            # Kill only once this incarnation has written something, so that
            # every kill lands mid-stream rather than during start-up.
            floor = projected()
            # B023: the lambda runs within this iteration, so it sees this floor.
            wait_until(lambda: projected() > floor + 50, 20, "progress", every=0.02)  # noqa: B023
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            projected_at_kill.append(projected())
            proc = start_projector(pg_settings, unique_id, log)
        producer.join(30)
        wait_until(lambda: projected() == len(events), 30, "every event projected")
        wait_until(
            lambda: checkpoints(db, f"timeline-{unique_id}") == high_watermarks(pg_settings, topic),
            10,
            "checkpoints at the end of the topic",
        )
    finally:
        proc.terminate()
        proc.wait(20)
        producer.join(30)

    assert projected_at_kill[-1] < len(events), "a kill came after the stream ended"
    assert event_ids(db) == sorted(e["id"] for e in events)
    assert count_completed(db, unique_id) == 300
    assert scalar(db, "SELECT count(*) FROM projector_rejects") == 0
    assert proc.returncode == 0, log.read_text()[-3000:]
