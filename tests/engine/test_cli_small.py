"""Small things the CLI got wrong: each fails with a clear message, or says what it does."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from engine import cli

FLOW_FILE = str(Path(__file__).parents[1] / "flows" / "basic.yaml")


def test_submit_of_a_missing_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "leads.jsonl"
    result = CliRunner().invoke(
        cli.app, ["submit", "-f", FLOW_FILE, "--file", str(missing)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # click's usage error, no traceback
    assert f"Invalid value for '--file': file '{missing}' does not exist." in result.stderr
