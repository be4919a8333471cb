"""``leadflow export``: the same files as the HTTP export, to stdout or to a file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from engine import cli
from engine.settings import Settings
from schemas.codec import event_to_json_dict
from tests.projectors.exports.conftest import Event

pytestmark = pytest.mark.stack


@pytest.fixture
def leadflow(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(cli, "get_settings", lambda: pg_settings)
    return CliRunner(env={"COLUMNS": "200"})  # so rich does not wrap the messages


def test_export_writes_json_lines_of_the_selected_events_to_stdout(
    leadflow: CliRunner, flow_events: list[Event], pg_schema: str
) -> None:
    lead = flow_events[0]["lead_id"]
    result = leadflow.invoke(
        cli.app,
        ["export", "--flow", pg_schema, "--lead", lead, "--type", "source.submitted",
         "--type", "flow.completed", "--format", "jsonl"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [orjson.loads(line) for line in result.stdout_bytes.splitlines()] == [
        event_to_json_dict(e)
        for e in flow_events
        if e["lead_id"] == lead and e["type"] in ("source.submitted", "flow.completed")
    ]


def test_export_to_a_file_writes_csv_and_reports_the_count_on_stderr(
    leadflow: CliRunner, flow_events: list[Event], pg_schema: str, tmp_path: Path
) -> None:
    target = tmp_path / "events.csv"
    result = leadflow.invoke(
        cli.app, ["export", "--flow", pg_schema, "--outcome", "failure", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    lines = target.read_bytes().splitlines()
    assert lines[0].startswith(b"event_id,lead_id,time,") and len(lines) == 1 + 1
    assert result.stdout_bytes == b""
    assert f"1 events written to {target}" in result.stderr


def test_export_refuses_bad_options_saying_which(leadflow: CliRunner) -> None:
    result = leadflow.invoke(cli.app, ["export", "--start", "2025-02-01", "--end", "2025-01-01"])
    assert result.exit_code == 2
    assert "end: end (2025-01-01T00:00:00+00:00) must be after start" in result.stderr
    result = leadflow.invoke(cli.app, ["export", "--format", "xlsx"])
    assert result.exit_code == 2 and "format: Input should be 'csv' or 'jsonl'" in result.stderr
