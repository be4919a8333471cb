"""Every log line of a whole run, searched for every secret the run used.

The flow's workers (``leadflow run -f``, every role: steps, projector, streamer), the API
(``leadflow serve``) answering a good key and a wrong one, and ``leadflow keys create`` run
as an operator runs them, at DEBUG, in JSON; their output must never hold a buyer's
credential, an API key (good or wrong), or the keys' pepper."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.intake.fake import fake_lead
from engine.ops.submit import publish_leads
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from tests.factories import DEMO_FLOW
from tests.kafka_helpers import wait_for_completion
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

BUYER_SECRET = "buyer-secret-7f3a9c2e1d"
PEPPER = "pepper-for-the-log-test-51b2"
WRONG_KEY = "lf_0000000000_wrongwrongwrongwrongwrong"
LEADS = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _flow_text(flow_id: str, buyer: BuyerServer) -> str:
    base = f"http://127.0.0.1:{buyer.server_address[1]}"
    text = DEMO_FLOW.read_text(encoding="utf-8")
    text = text.replace("id: demo\n", f"id: {flow_id}\n", 1)
    text = text.replace("http://127.0.0.1:8765", base)
    text = text.replace("prefix: demo", f"prefix: {flow_id}")
    # The buyer wants a bearer credential, by reference.
    return text.replace(
        "    name: Premier Leads LLC\n    settings:\n",
        "    name: Premier Leads LLC\n    settings:\n"
        "      auth: {kind: bearer, secret_env: LF_TEST_BUYER_SECRET}\n",
        1,
    )


@pytest.fixture
def buyer() -> Iterator[BuyerServer]:
    server = BuyerServer(port=0, mix=True)
    server.start_in_thread()
    yield server
    server.stop()


def _leadflow(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", *args], env=env, stdout=out, stderr=out
        )


def test_no_secret_of_a_whole_run_is_in_its_logs(
    stack: Settings, unique_id: str, buyer: BuyerServer, tmp_path: Path
) -> None:
    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(_flow_text(unique_id, buyer), encoding="utf-8")
    flow: Flow = parse_flow(flow_file.read_text(encoding="utf-8"), str(flow_file))
    settings = stack.model_copy(update={"db_schema": unique_id})
    prepare_topics(settings, flow)
    env = {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": unique_id,
        "LEADFLOW_LOG_LEVEL": "DEBUG",
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_API_KEY_PEPPER": PEPPER,
        "LF_TEST_BUYER_SECRET": BUYER_SECRET,
    }
    log = tmp_path / "all.log"
    migrate = subprocess.run(
        [sys.executable, "-m", "engine", "db", "migrate"], env=env, capture_output=True, check=True
    )
    created = subprocess.run(
        [sys.executable, "-m", "engine", "keys", "create", "logs",
         "--scope", "events:read", "--scope", "pii:read"],
        env=env, capture_output=True, check=True, text=True,
    )  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("lf_")
    port = _free_port()
    procs = [
        _leadflow(["run", "-f", str(flow_file)], env, log),
        _leadflow(["serve", "--port", str(port)], env, log),
    ]
    try:
        rng = random.Random(3)
        ids = publish_leads(settings, flow.id, [fake_lead(rng, n) for n in range(LEADS)])
        events = wait_for_completion(settings, flow, LEADS, timeout=120)
        url = f"http://127.0.0.1:{port}/events"
        wait_until(lambda: _status(url, key), 60, "the API to answer", until=lambda s: s == 200)
        assert _status(url, WRONG_KEY) == 401
        assert _status(url, key, header="X-API-Key") == 200
        assert httpx.get(url, params={"lead_id": ids[0]}, headers=_bearer(key)).status_code == 200
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    text = log.read_text(encoding="utf-8", errors="replace")
    text += migrate.stdout.decode() + migrate.stderr.decode() + created.stderr
    # The logs were kept: the workers' and the API's refusal of the wrong key are in them.
    assert "step worker started" in text
    assert len(text.splitlines()) > 20
    for name, secret in (
        ("buyer credential", BUYER_SECRET),
        ("API key", key),
        ("API key's secret part", key.rsplit("_", 1)[-1]),
        ("wrong key", WRONG_KEY),
        ("pepper", PEPPER),
    ):
        assert secret not in text, f"the {name} is in the logs"
    # The credential was read and sent: no delivery failed for want of it.
    assert buyer.stats.snapshot()["requests"] > 0
    assert not [e for e in events if "credentials unavailable" in str(e.get("reason"))]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _status(url: str, key: str, header: str = "Authorization") -> int:
    headers = _bearer(key) if header == "Authorization" else {header: key}
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code
    except httpx.HTTPError:
        time.sleep(0.5)
        return 0
