"""The alert evaluator's Postgres state: one evaluator per flow, and actions that give up."""

from __future__ import annotations

import threading

import pytest
from psycopg.types.json import Jsonb

from engine.runtime.alerting.actions import ActionRunner
from engine.settings import Settings
from engine.state.alerts import AlertStateStore, ClaimedAction
from engine.state.postgres import connect

pytestmark = pytest.mark.stack


def test_a_second_evaluator_of_the_flow_waits_for_the_first(state_settings: Settings) -> None:
    first = AlertStateStore(state_settings, "solar")
    second = AlertStateStore(state_settings, "solar")
    other_flow = AlertStateStore(state_settings, "wind")
    try:
        assert first.acquire(threading.Event())
        assert other_flow.acquire(threading.Event())  # a lock per flow
        gave_up = threading.Event()
        threading.Timer(0.5, gave_up.set).start()
        assert not second.acquire(gave_up, retry_s=0.1)
        first.close()  # a process killed: its connection, and the lock with it, gone
        assert second.acquire(threading.Event(), retry_s=0.1)
    finally:
        for store in (first, second, other_flow):
            store.close()


def _add_action(settings: Settings, max_attempts: int) -> None:
    payload = {"webhook": {"url": "http://127.0.0.1:9/x", "max_attempts": max_attempts}}
    with connect(settings) as conn:
        conn.execute(
            "INSERT INTO engine_alert_actions (id, flow_id, alert_id, kind, payload)"
            " VALUES ('a1.triggered.webhook.0', 'solar', 'a1', 'webhook', %s)",
            (Jsonb({**payload, "body": {}}),),
        )


def _status(settings: Settings) -> tuple[str, int, str]:
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT status, attempts, last_error FROM engine_alert_actions"
        ).fetchone()
        # Due again at once, so the test does not wait out the backoff.
        conn.execute("UPDATE engine_alert_actions SET next_attempt_at = now()")
    assert row is not None
    return str(row[0]), int(row[1]), str(row[2])


def test_an_action_failing_every_attempt_is_given_up_with_its_last_error(
    state_settings: Settings,
) -> None:
    AlertStateStore(state_settings, "solar").close()  # the tables
    _add_action(state_settings, max_attempts=3)
    tried: list[int] = []

    def failing(_: Settings, action: ClaimedAction) -> None:
        tried.append(action.attempts)
        raise ConnectionRefusedError("nobody listens")

    runner = ActionRunner(state_settings, "solar", perform=failing)
    try:
        assert runner.run_due() == 1
        assert _status(state_settings) == ("pending", 1, "ConnectionRefusedError")
        assert runner.run_due() == 1
        assert _status(state_settings) == ("pending", 2, "ConnectionRefusedError")
        assert runner.run_due() == 1
        assert _status(state_settings) == ("failed", 3, "ConnectionRefusedError")
        assert runner.run_due() == 0  # given up: never tried again
    finally:
        runner.close()
    assert tried == [1, 2, 3]
