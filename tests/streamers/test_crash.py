"""kill -9 the streamer process mid-stream, again and again: no event lost, none duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from engine.settings import Settings
from streamers.destinations import ObjectStore, count_objects
from tests.factories import write_flow
from tests.streamers.support import (
    all_committed,
    create_topics,
    event_keys,
    expected_objects,
    make_events,
    offsets,
    produce_events,
    read_objects,
    streaming_flow,
    wait_until,
)

REPO = Path(__file__).parents[2]
KILLS = 3


def start_streamer(flow_file: Path, instance: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEADFLOW_LOG_FORMAT": "json"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamers",
                "--flow-file",
                str(flow_file),
                # Static membership: a restarted process takes its predecessor's
                # place at once instead of waiting out its session timeout.
                "-X",
                f"group.instance.id={instance}",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    stack: Settings, unique_id: str, tmp_path: Path, stores: dict[str, ObjectStore]
) -> None:
    prefix = f"streamer-tests/{unique_id}"
    flow = streaming_flow(stack, unique_id, prefix)
    topics = create_topics(stack, flow)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    log = tmp_path / "streamer.log"
    events = make_events(unique_id, leads=60)  # 300 events
    chunks = [events[i : i + 25] for i in range(0, len(events), 25)]

    def produce_slowly() -> None:
        for chunk in chunks:
            produce_events(stack, flow.id, chunk)
            time.sleep(0.4)

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    proc = start_streamer(flow_file, f"crash-{unique_id}", log)

    def total_objects() -> int:
        return sum(count_objects(store, prefix) for store in stores.values())

    try:
        written_at_kill = []
        for _ in range(KILLS):
            # Kill only once this incarnation has written something, so every
            # kill lands in the middle of the stream rather than during startup.
            floor = total_objects()
            # B023: the lambda runs within this iteration, so it sees this floor.
            wait_until(lambda: total_objects() > floor + 10, 30, "progress", every=0.1)  # noqa: B023
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            written_at_kill.append(count_objects(stores["s3"], prefix))
            proc = start_streamer(flow_file, f"crash-{unique_id}", log)
        producer.join(60)
        wait_until(lambda: all_committed(stack, flow, topics), 60, "offsets committed")
    finally:
        proc.terminate()
        proc.wait(20)
        producer.join(60)

    assert written_at_kill[0] < len(events), "the first kill came after the stream ended"
    expected = expected_objects(prefix, events)
    for kind, store in stores.items():
        keys = event_keys(store, prefix)
        assert keys == sorted(expected), kind
        contents = read_objects(store, keys)
        assert {k: orjson.loads(v) for k, v in contents.items()} == expected, kind
    state = offsets(stack, flow, topics)
    high = state.pop("high")
    assert sum(high.values()) == len(events)
    assert list(state.values()) == [high, high]
    assert proc.returncode == 0, log.read_text()[-3000:]
