"""Structured logs: JSON lines, secrets masked, and robust to a swapped stderr."""

import io
import json
import sys

import pytest
import structlog
from structlog.testing import capture_logs

from engine.logs import configure_logging


def test_json_logs_mask_secret_looking_keys_and_follow_the_current_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging("json", "INFO")
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log = structlog.get_logger("test")
    log.info("connected", database_password="hunter2", connection_string="AccountKey=abc")
    first.close()  # what a test or CLI runner does to the stream it lent
    monkeypatch.setattr(sys, "stderr", second)
    log.info("still logging")
    [record] = [json.loads(line) for line in first_lines(second)]
    assert record["event"] == "still logging"


def first_lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.strip()]


def test_secrets_never_reach_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("json", "INFO")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    structlog.get_logger("test").info("connected", database_password="hunter2", api_key="k-123")
    record = json.loads(out.getvalue())
    assert record["database_password"] == "***"
    assert record["api_key"] == "***"
    assert "hunter2" not in out.getvalue()


def test_the_console_renderer_never_prints_a_tracebacks_local_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging("console", "INFO")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)

    def deliver(lead_email: str) -> None:
        raise RuntimeError("buyer refused")

    email = "moc.elpmaxe@ecalevol.ada"[::-1]  # not in the source lines a traceback shows
    try:
        deliver(email)
    except RuntimeError:
        structlog.get_logger("test").exception("delivery failed")
    text = out.getvalue()
    assert "buyer refused" in text and "deliver" in text  # the traceback is there
    assert "ada.lovelace@example.com" not in text  # its frame's locals are not


def test_a_logger_cached_before_a_reconfiguration_follows_it() -> None:
    """A second ``configure_logging`` (a CLI command in a test process, a worker after its
    parent) reaches loggers already cached: they write with the new processors, and a test's
    ``capture_logs`` sees them (a projector bound before it once logged past it)."""
    configure_logging("json", "INFO")
    bound = structlog.get_logger("cached").bind(who="early")
    bound.info("first use caches it")
    configure_logging("json", "INFO")
    with capture_logs() as logs:
        bound.warning("after")
    assert logs == [{"who": "early", "event": "after", "log_level": "warning"}]
