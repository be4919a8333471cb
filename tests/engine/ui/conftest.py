# ruff: noqa: F811  # the projector fixtures imported below are pytest fixtures, named as arguments
"""Fixtures for the operator UI: a projection of a few leads (one of them hostile) in a
schema of the test's own, and the API process serving it on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from engine.api.app import create_app
from engine.settings import Settings, UiKey
from projectors.batch import Record, build_batch
from projectors.store import Connection, write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events

# The projector tests' schema-per-test fixtures, reused: a migrated schema dropped afterwards.
from tests.projectors.conftest import db, pg_schema, pg_settings  # noqa: F401

PII_KEY = "test-pii-key-0123456789"
MASKED_KEY = "test-masked-key-0123456789"
HOSTILE_NAME = "<script>alert('first')</script>"
HOSTILE_LAST = '<img src=x onerror="alert(2)">'
HOSTILE_REASON = "Rejected: <b>bold</b> & <svg onload=alert(3)> — Zoë 🚀 العربية"
LONG_VALUE = "x" * 5000 + "<script>alert(4)</script>"


@dataclass(frozen=True)
class Leads:
    flow_id: str
    good: list[dict[str, Any]]
    hostile: list[dict[str, Any]]
    email: str


def _hostile(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same timeline with attacker-controlled data everywhere a page shows it, and its
    filter failing with a hostile reason."""
    for e in events:
        e["vars"] = {
            **e["vars"],
            "lead.first_name": HOSTILE_NAME,
            "lead.last_name": HOSTILE_LAST,
            "lead.comments": LONG_VALUE,
            "lead.city": "Zoë 🚀 العربية 漢字",
            "lead.email": "mallory@example.com",
        }
        if e["type"] == "filter.passed":
            e["type"], e["outcome"], e["reason"] = "filter.failed", "failure", HOSTILE_REASON
    return events


@pytest.fixture
def ui_leads(db: Connection, pg_schema: str) -> Leads:
    """A delivered lead and a hostile one, submitted an hour ago (inside the dashboard's
    default range), written straight into the projection."""
    codec = EventCodec()
    now_ms = int(time.time() * 1000) - 3_600_000
    good = make_lead_events(flow_id=pg_schema, submitted_ms=now_ms)
    for e in good:
        e["vars"] = {**e["vars"], "lead.first_name": "Ada", "lead.phone_1": "5125550147"}
    hostile = _hostile(make_lead_events(flow_id=pg_schema, submitted_ms=now_ms + 1000))
    every = good + hostile
    records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(every)]
    write_batch(db, "test", build_batch(codec, records))
    return Leads(pg_schema, good, hostile, "ada@example.com")


@pytest.fixture
def ui_settings(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LEADFLOW_TEST_UI_PII_KEY", PII_KEY)
    monkeypatch.setenv("LEADFLOW_TEST_UI_MASKED_KEY", f"sha256:{_sha256(MASKED_KEY)}")
    keys = (
        UiKey(name="ops", key_env="LEADFLOW_TEST_UI_PII_KEY", scopes=("read", "pii")),
        UiKey(name="support", key_env="LEADFLOW_TEST_UI_MASKED_KEY", scopes=("read",)),
    )
    return pg_settings.model_copy(update={"ui_keys": keys, "flow_file": "tests/flows/none.yaml"})


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ui_server(ui_settings: Settings) -> Iterator[str]:
    """``leadflow serve``'s app on a free port, in a thread; its base URL."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(ui_settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
