"""kill -9 the streamer process mid-stream, again and again: no event lost, none duplicated,
per-event and batched; credentials (passed by reference) never reach its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.destinations import AzureCredentials, S3Credentials, SecretRef
from engine.objects.contract import ObjectStore
from engine.settings import Settings
from streamers.readback import count_objects
from tests.factories import write_flow
from tests.streamers.support import (
    SETTLE_S,
    all_committed,
    assert_holds_exactly,
    create_topics,
    events_across_an_hour,
    expected_events,
    offsets,
    produce_events,
    streaming_flow,
    wait_until,
)
from tests.streamers.test_object_store_contract import AZURITE_ACCOUNT_KEY, azurite

AZURITE_BLOB_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"

REPO = Path(__file__).parents[2]
# kill -9 at chosen moments needs the machine to itself to hit them.
pytestmark = [pytest.mark.stack, pytest.mark.serial]

KILLS = 3


def start_streamer(
    flow_file: Path, instance: str, log: Path, secrets: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **secrets, "LEADFLOW_LOG_FORMAT": "json"}
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


S3_KEY_ID_ENV, S3_SECRET_ENV, AZURE_ENV = "LF_TEST_S3_KEY_ID", "LF_TEST_S3_SECRET", "LF_TEST_AZURE"
BY_REFERENCE = {
    "s3": {
        "credentials": S3Credentials(
            access_key_id=SecretRef(env=S3_KEY_ID_ENV),
            secret_access_key=SecretRef(env=S3_SECRET_ENV),
        )
    },
    "azure": {"credentials": AzureCredentials(connection_string=SecretRef(env=AZURE_ENV))},
}
BATCH = {"max_records": 10, "max_seconds": 1}


def credentials_env(settings: Settings) -> dict[str, str]:
    """The secrets the flow file refers to: the local stack's own credentials."""
    assert settings.aws_access_key_id and settings.aws_secret_access_key
    return {
        S3_KEY_ID_ENV: settings.aws_access_key_id,
        S3_SECRET_ENV: settings.aws_secret_access_key.get_secret_value(),
        AZURE_ENV: azurite(
            settings, AZURITE_ACCOUNT_KEY, AZURITE_BLOB_ENDPOINT
        ).azure_storage_connection_string.get_secret_value(),
    }


@pytest.mark.parametrize(
    ("s3", "azure"),
    [
        ({}, {}),
        ({"format": "jsonl.gz", "batch": BATCH}, {"format": "avro", "batch": BATCH}),
    ],
    ids=["per-event", "batched"],
)
def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    stack: Settings,
    unique_id: str,
    tmp_path: Path,
    stores: dict[str, ObjectStore],
    s3: dict[str, Any],
    azure: dict[str, Any],
) -> None:
    prefix = f"streamer-tests/{unique_id}"
    flow = streaming_flow(
        stack,
        unique_id,
        prefix,
        s3={**s3, **BY_REFERENCE["s3"]},
        azure={**azure, **BY_REFERENCE["azure"]},
    )
    topics = create_topics(stack, flow)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    env = credentials_env(stack)
    log = tmp_path / "streamer.log"
    events = events_across_an_hour(unique_id, leads=60)  # 300 events
    chunks = [events[i : i + 25] for i in range(0, len(events), 25)]
    step = 10 if not s3 else 1  # batched objects hold ~10 events each

    def produce_slowly() -> None:
        for chunk in chunks:
            produce_events(stack, flow.id, chunk)
            time.sleep(0.4)

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    proc = start_streamer(flow_file, f"crash-{unique_id}", log, env)

    def total_objects() -> int:
        return sum(count_objects(store, prefix) for store in stores.values())

    try:
        written_at_kill = []
        for _ in range(KILLS):
            # Kill only once this incarnation has written something, so every
            # kill lands in the middle of the stream rather than during startup.
            floor = total_objects()
            # B023: the lambda runs within this iteration, so it sees this floor.
            wait_until(lambda: total_objects() >= floor + step, 30, "progress", every=0.1)  # noqa: B023
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            written_at_kill.append(count_objects(stores["s3"], prefix))
            proc = start_streamer(flow_file, f"crash-{unique_id}", log, env)
        producer.join(60)
        wait_until(lambda: all_committed(stack, flow, topics), SETTLE_S, "offsets committed")
    finally:
        proc.terminate()
        proc.wait(20)
        producer.join(60)

    assert written_at_kill[0] < len(events), "the first kill came after the stream ended"
    expected = expected_events(events)
    for store in stores.values():
        assert_holds_exactly(store, prefix, expected)
    state = offsets(stack, flow, topics)
    high = state.pop("high")
    assert sum(high.values()) == len(events)
    assert list(state.values()) == [high, high]
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "streamer started" in text
    for name, secret in env.items():
        if name != S3_KEY_ID_ENV:
            assert secret not in text, name
    assert AZURITE_ACCOUNT_KEY not in text
