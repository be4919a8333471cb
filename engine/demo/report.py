"""Rich tables for what the demo and ``leadflow events`` show a person."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table

_STYLE = {"success": "green", "failure": "yellow", "error": "red"}
_ICON = {"success": "✔", "failure": "✖", "error": "⚠"}


def _outcome(outcome: str) -> str:
    return f"[{_STYLE.get(outcome, 'white')}]{_ICON.get(outcome, '?')} {outcome}[/]"


def timeline_table(events: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="Lead timeline", show_lines=False)
    for col in ("time (UTC)", "type", "outcome", "reason", "step", "ms"):
        table.add_column(col)
    for e in events:
        ts = e.get("timestamp") or e.get("ts")
        table.add_row(
            str(ts)[11:23] if ts else "",
            str(e["type"]),
            _outcome(str(e["outcome"])),
            str(e.get("reason") or ""),
            str(e.get("step_name") or e.get("step_id") or ""),
            str(e.get("ms", "")),
        )
    return table


def counts_table(rows: Iterable[tuple[str, str, int]]) -> Table:
    table = Table(title="Events by type and outcome")
    table.add_column("type")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for type_, outcome, count in rows:
        table.add_row(type_, _outcome(outcome), str(count))
    return table


def destinations_table(rows: Iterable[tuple[str, str, int]]) -> Table:
    table = Table(title="Event objects streamed")
    table.add_column("destination")
    table.add_column("prefix")
    table.add_column("objects", justify="right")
    for where, prefix, count in rows:
        table.add_row(where, prefix, str(count))
    return table
