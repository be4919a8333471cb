"""The demo flow over SASL_SSL (SCRAM-SHA-512, TLS with a CA made for the test), as an
operator runs it: ``leadflow run`` with ``LEADFLOW_KAFKA_*`` pointing at the secure listener,
leads in, ``flow.completed`` out, every event readable; and what the broker refuses: a wrong
password, a plaintext client, a client that does not trust the broker's certificate, each
in one line with no secret in it. ``leadflow serve`` answers over HTTPS on the same broker.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from pydantic import SecretStr

from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.ops.submit import publish_leads
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from tests.factories import write_flow
from tests.kafka_helpers import events_by_lead, read_events
from tests.security.secure_kafka import (
    SECURE_BOOTSTRAP,
    SecureKafka,
    secure_kafka_fixture,  # noqa: F401  (registers the `secure_kafka` fixture in this module)
)
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

DEMO_FLOW = Path(__file__).parents[2] / "flows" / "demo.yaml"
GOOD = {
    "first_name": "Ada",
    "last_name": "L",
    "phone_1": "5125550123",
    "state": "CA",
    "tcpa_consent": "yes",
}
LEADS: list[dict[str, Any] | str] = [
    *({**GOOD, "email": f"ada{i}@example.com"} for i in range(5)),
    {**GOOD, "email": "wy@example.com", "state": "WY"},  # filtered out
    "not json at all",  # rejected by the source
]


def demo_flow(flow_id: str, buyer: BuyerServer) -> Flow:
    """``flows/demo.yaml`` under its own id, its services on the test's buyer, one partition
    per topic, no destinations (streaming is not what is tested here)."""
    text = DEMO_FLOW.read_text(encoding="utf-8").split("\ndestinations:")[0]
    text = text.replace("id: demo\n", f"id: {flow_id}\n", 1)
    # Clear values, as before the demo sealed them: sealing has its own proofs (tests/security/
    # test_sealing_at_rest.py, test_erasure_proof.py); here it would only need a master key.
    text = re.sub(r"\nsensitive_fields: .*\n", "\n", text, count=1)
    text = text.replace("partitions: 3", "partitions: 1")
    text = text.replace("http://127.0.0.1:8765", buyer.url.rsplit("/", 1)[0])
    return parse_flow(text, f"{flow_id}.yaml")


def leadflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env={**os.environ, "LEADFLOW_LOG_FORMAT": "json", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def workers(
    secure_kafka: SecureKafka, stack: Settings, unique_id: str, buyer: BuyerServer, tmp_path: Path
) -> Iterator[tuple[Flow, Path]]:
    """``leadflow run -f`` of the demo flow's steps, on the secure broker; its log file."""
    flow = demo_flow(unique_id, buyer)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    env = {
        **os.environ,
        **secure_kafka.env(),
        "LEADFLOW_DB_SCHEMA": unique_id,
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_FEEDBACK_TOPIC": f"leadflow.{unique_id}.feedback",
    }
    log_path = tmp_path / "workers.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "run",
                "-f",
                str(flow_file),
                "source",
                "phone-check",
                "service-area",
                "premier",
                "summit",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        yield flow, log_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_the_demo_flow_runs_over_sasl_ssl_and_wrong_clients_are_refused(
    secure_kafka: SecureKafka, stack: Settings, workers: tuple[Flow, Path], tmp_path: Path
) -> None:
    """One test for everything the broker is needed for, so that one broker starts however
    the tests are spread over processes (pytest-xdist's loadgroup does not group on pytest
    9.2: pytest-dev/pytest-xdist#1386)."""
    flow, log_path = workers
    secure = secure_kafka.settings(stack)
    prepare_topics(secure, flow)  # what `run -f` does too; the leads must not wait for it
    ids = publish_leads(secure, flow.id, LEADS)

    def completed() -> dict[str, list[dict[str, Any]]]:
        by_lead = events_by_lead(read_events(secure, flow, timeout=5))
        done = {
            lead: events
            for lead, events in by_lead.items()
            if events[-1]["type"] == "flow.completed"
        }
        return done if set(done) >= set(ids) else {}

    by_lead = wait_until(
        completed, timeout=60, what="flow.completed for every lead over SASL_SSL", every=1.0
    )
    outcomes = [by_lead[i][-1]["outcome"] for i in ids]
    assert outcomes == ["success"] * 5 + ["failure", "failure"]
    assert {"recipient.delivered", "filter.passed"} <= {e["type"] for e in by_lead[ids[0]]}
    assert [e["type"] for e in by_lead[ids[5]]][-2:] == ["filter.failed", "flow.completed"]
    for events in by_lead.values():
        assert [e["type"] for e in events].count("flow.completed") == 1
    password = secure_kafka.password_file.read_text(encoding="utf-8").strip()
    assert password not in log_path.read_text(encoding="utf-8", errors="replace")

    wrong_password_is_one_clear_error(secure_kafka, tmp_path)
    plaintext_client_gets_nothing(secure_kafka)
    untrusted_certificate_is_refused(secure_kafka, tmp_path)


def wrong_password_is_one_clear_error(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password", encoding="utf-8")
    env = {**secure_kafka.env(), "LEADFLOW_KAFKA_SASL_PASSWORD_FILE": str(wrong)}
    done = leadflow("flow", "list", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: Kafka at {SECURE_BOOTSTRAP} is not reachable (SASL authentication error: "
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512)"
    ]
    assert "not-the-password" not in done.stderr + done.stdout


def plaintext_client_gets_nothing(secure_kafka: SecureKafka) -> None:
    done = leadflow("flow", "list", env={"LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": SECURE_BOOTSTRAP})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: Kafka at {SECURE_BOOTSTRAP} is not reachable")
    assert "LEADFLOW_KAFKA_SECURITY_PROTOCOL" in line


def untrusted_certificate_is_refused(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    env = {**secure_kafka.env(), "LEADFLOW_KAFKA_SSL_CA_LOCATION": str(other_ca)}
    done = leadflow("flow", "list", env=env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "certificate verify failed" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_over_https(stack: Settings, unique_id: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    trusted = ssl.create_default_context(cafile=str(ca_file))
    port = _free_port()
    env = {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": unique_id,
        "LEADFLOW_EXPORT_WORKER_IN_API": "false",
        "LEADFLOW_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--port",
            str(port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def healthy() -> httpx.Response | None:
            assert process.poll() is None, "leadflow serve exited"
            try:
                return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusted)
            except httpx.TransportError:
                return None

        answer = wait_until(healthy, timeout=30, what="leadflow serve over HTTPS")
        assert answer.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def test_postgres_tls_settings_reach_every_engine_connection(stack: Settings) -> None:
    """The local Postgres runs without TLS: ``sslmode=require`` must make each of the
    engine's connection paths fail saying so (the parameter reached libpq, over the URL's
    own ``sslmode``), and ``disable`` must connect as before."""
    from engine.state.errors import StateUnavailableError
    from engine.state.postgres import connect as state_connect
    from projectors.errors import StoreUnavailableError
    from projectors.store import connect as projection_connect

    url = stack.database_url.get_secret_value()
    with_url_mode = stack.model_copy(
        update={"database_url": SecretStr(url + ("&" if "?" in url else "?") + "sslmode=disable")}
    )
    required = with_url_mode.model_copy(update={"db_sslmode": "require"})
    with pytest.raises(StateUnavailableError, match="SSL"):
        state_connect(required)
    with pytest.raises(StoreUnavailableError, match="SSL"):
        projection_connect(required)
    disabled = stack.model_copy(update={"db_sslmode": "disable"})
    with state_connect(disabled) as conn:
        assert conn.info.parameter_status("server_version")
    with projection_connect(disabled) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
