"""Small things the CLI got wrong: each fails with a clear message, or says what it does."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from engine import cli
from engine.demo.buyer import BuyerPortError, BuyerServer
from engine.errors import LeadflowError
from engine.settings import Settings
from projectors.exports.runner import ExportWorker

FLOW_FILE = str(Path(__file__).parents[1] / "flows" / "basic.yaml")


def test_submit_of_a_missing_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "leads.jsonl"
    result = CliRunner().invoke(
        cli.app, ["submit", "-f", FLOW_FILE, "--file", str(missing)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # click's usage error, no traceback
    assert f"Invalid value for '--file': file '{missing}' does not exist." in result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_the_buyer_on_a_busy_port_says_so_in_one_line(busy_port: int) -> None:
    with pytest.raises(BuyerPortError) as raised:
        BuyerServer(busy_port)
    assert str(raised.value) == (
        f"the demo buyer cannot listen on 127.0.0.1:{busy_port}: Address already in use"
        " (another port: leadflow buyer --port N)"
    )
    result = CliRunner().invoke(cli.app, ["buyer", "--port", str(busy_port)])
    assert isinstance(result.exception, LeadflowError)  # main() prints it as one line, exit 2


def test_the_export_worker_says_it_started_and_where_it_writes(settings: Settings) -> None:
    stop = threading.Event()
    stop.set()  # start, say so, stop
    with structlog.testing.capture_logs() as logs:
        ExportWorker(settings, name="w1").run(stop)
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("export worker started", "info"),
        ("export worker stopped", "info"),
    ]
    assert {k: logs[0][k] for k in ("worker", "store", "bucket", "prefix")} == {
        "worker": "w1",
        "store": settings.export_store_kind,
        "bucket": settings.export_bucket,
        "prefix": settings.export_prefix,
    }
