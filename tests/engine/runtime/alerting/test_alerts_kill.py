"""An evaluator killed with SIGKILL after it fired: its successor fires nothing twice.

The alert's state, the offsets it read to and the outbox row are one commit, so the
evaluator that takes over (after the dead one's lock went with its connection) resumes
with the alert already firing, reads on from the committed offsets, and, with the
source still breaching, records no second trigger, webhook or cap change.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from multiprocessing.process import BaseProcess

import pytest

from engine.flows import Flow
from engine.runtime.alerting.evaluator import run_alerts
from engine.settings import Settings
from engine.state.postgres import connect
from tests.engine.runtime.alerting.conftest import WebhookReceiver, put_source_events
from tests.waiting import wait_until

# serial: its kill aims at a moment (right after a commit) that a busy machine would move.
pytestmark = [pytest.mark.stack, pytest.mark.serial]


def _evaluate(settings: Settings, flow: Flow) -> None:
    run_alerts(settings, flow, threading.Event(), tick_s=0.2)


def _start(settings: Settings, flow: Flow) -> BaseProcess:
    proc = mp.get_context("spawn").Process(target=_evaluate, args=(settings, flow), daemon=True)
    proc.start()
    return proc


def _rows(settings: Settings, query: str) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        return conn.execute(query).fetchall()


def _read_to(settings: Settings) -> int:
    (row,) = _rows(settings, "SELECT coalesce(sum(next_offset), 0) FROM engine_alert_positions")
    return int(row[0])  # type: ignore[call-overload]


def test_sigkill_after_a_trigger_fires_nothing_twice(
    alert_settings: Settings, alerted_flow: Flow, receiver: WebhookReceiver
) -> None:
    first = _start(alert_settings, alerted_flow)
    second = None
    try:
        put_source_events(alert_settings, alerted_flow, rejected=8, accepted=2)
        triggered = "SELECT id FROM system_event_outbox WHERE type = 'alert.triggered'"
        wait_until(lambda: _rows(alert_settings, triggered), 60, "the first evaluator's trigger")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        first.join(10)
        assert first.exitcode == -signal.SIGKILL

        # Still breaching while no evaluator runs, and after the successor starts.
        put_source_events(alert_settings, alerted_flow, rejected=8, accepted=2)
        second = _start(alert_settings, alerted_flow)
        put_source_events(alert_settings, alerted_flow, rejected=8, accepted=2)
        wait_until(
            lambda: _read_to(alert_settings),
            60,
            "the successor to read every event",
            until=lambda n: n == 30,
        )
        wait_until(
            lambda: _rows(alert_settings, "SELECT status FROM engine_alert_actions"),
            60,
            "the actions carried out",
            until=lambda rows: bool(rows) and all(r[0] == "done" for r in rows),
        )
        assert len(_rows(alert_settings, triggered)) == 1
        kinds = _rows(alert_settings, "SELECT kind FROM engine_alert_actions ORDER BY kind")
        assert [k for (k,) in kinds] == ["lower_source_cap", "webhook"]
        assert [b["type"] for b in receiver.bodies("alert.triggered")] == ["alert.triggered"]
        (firing,) = _rows(alert_settings, "SELECT firing FROM engine_alert_windows")
        assert firing == (True,)
    finally:
        for proc in (first, second):
            if proc is not None and proc.is_alive():
                proc.kill()
                proc.join(10)
