"""``leadflow alerts status``: each alert rule's state, its last alert and its actions.

Read from the engine state (``engine.state.alerts``), so an on-call operator sees what
fires, since when and why, and which webhook or cap change is still owed or gave up,
whether or not an evaluator is running.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.ops.output import AsJson, print_json
from engine.settings import get_settings
from engine.state.alerts import alert_statuses

_COLOURS = {"firing": "red", "resolving": "yellow", "breaching": "yellow", "ok": "green"}

alerts_app = typer.Typer(no_args_is_help=True, help="Alerts of the flows' `alerts:` rules.")


@alerts_app.command()
def status(
    flow: Annotated[str | None, typer.Option("--flow", help="Only this flow's alerts.")] = None,
    as_json: AsJson = False,
) -> None:
    """Per rule and subject: firing or not, since when, the last alert's summary, actions
    pending or failed (exit code 1 while any alert fires, for scripts and probes)."""
    rows = alert_statuses(get_settings(), flow)
    if as_json:
        print_json([row.as_json() for row in rows])
    else:
        table = Table("flow", "rule", "subject", "state", "since", "last alert", "actions")
        for row in rows:
            state = f"[{_COLOURS[row.state]}]{row.state}[/]"
            last = f"{row.last_alert}: {row.summary}" if row.last_alert else "-"
            actions = f"{row.actions_pending} pending, {row.actions_failed} failed"
            if row.last_error:
                actions += f" ({row.last_error})"
            table.add_row(
                row.flow_id, row.rule_id, row.subject, state, row.since or "-", last, actions
            )
        Console().print(table if rows else "No alert rule has been evaluated yet.")
    if any(row.state in ("firing", "resolving") for row in rows):
        raise typer.Exit(1)
