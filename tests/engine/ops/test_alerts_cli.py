"""``leadflow alerts status``: what fires, since when and why, and the actions owed, read
from the state the evaluator commits (``engine.state.alerts``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from engine import cli
from engine.alerts.actions import actions_for
from engine.alerts.evaluation import FlowAlerts
from engine.alerts.rules import AlertRule
from engine.ops import alerts_cli
from engine.settings import Settings
from engine.state.alerts import AlertStateStore

pytestmark = pytest.mark.stack

MIN = 60_000
T0 = 1_800_000_000_000
RULE = AlertRule(
    id="rejections",
    metric="rejection_rate",
    above=30,
    resolve=20,
    window_minutes=5,
    min_events=10,
    webhook={"url": "http://127.0.0.1:9/hook"},
)


@pytest.fixture
def settings(
    stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The stack on a schema of the test's own, as the command reads it."""
    own = stack.model_copy(update={"db_schema": unique_id})
    monkeypatch.setattr(alerts_cli, "get_settings", lambda: own)
    yield own
    with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_id)))


class Evaluator:
    """The rule judged minute by minute, each minute committed as the evaluator does."""

    def __init__(self, settings: Settings) -> None:
        self.alerts = FlowAlerts("solar", [RULE])
        self.store = AlertStateStore(settings, "solar")
        self.now = T0

    def minute(self, bad: int, good: int) -> list[str]:
        self.now += MIN
        events = [
            {"type": "flow.completed", "timestamp": self.now - 1, "step_id": "buyer",
             "outcome": "failure" if n < bad else "success", "lead_id": f"l{self.now}-{n}",
             "reason": "Filtered: Service area" if n < bad else None, "ms": 5}
            for n in range(bad + good)
        ]  # fmt: skip
        self.alerts.observe_all(events, self.now)
        changes = self.alerts.evaluate(self.now)
        owed = [(c, actions_for(c, [])) for c in changes]
        self.store.commit({}, self.alerts.take_dirty(), owed)
        return [c.transition for c in changes]


def status(*args: str) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(cli.app, ["alerts", "status", *args, "--json"])
    return result.exit_code, orjson.loads(result.stdout)


def test_status_follows_an_alert_through_trigger_and_resolution(settings: Settings) -> None:
    evaluator = Evaluator(settings)
    try:
        assert evaluator.minute(bad=1, good=9) == []
        code, [row] = status()
        assert (code, row["state"], row["last_alert"], row["actions_pending"]) == (0, "ok", None, 0)

        assert evaluator.minute(bad=9, good=1) == ["triggered"]  # 10/20 = 50 %
        code, [row] = status("--flow", "solar")
        assert code == 1  # something fires: a probe or a script can tell
        assert (row["rule_id"], row["subject"], row["state"]) == ("rejections", "flow", "firing")
        assert row["since"] == "2027-01-15T08:02:00+00:00"  # T0 + 2 minutes
        assert row["last_alert"] == "triggered at 2027-01-15T08:02:00+00:00"
        assert "rejection_rate" in row["summary"]
        assert (row["actions_pending"], row["actions_failed"]) == (1, 0)  # the webhook

        transitions = []
        for _ in range(6):  # the bad minutes leave the 5-minute window
            transitions += evaluator.minute(bad=0, good=10)
        assert transitions == ["resolved"]
        code, [row] = status()
        assert (code, row["state"], row["last_alert"][:8]) == (0, "ok", "resolved")
        assert status("--flow", "wind") == (0, [])
    finally:
        evaluator.store.close()
