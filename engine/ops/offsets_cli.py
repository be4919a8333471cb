"""``leadflow offsets``: consumer group lag, and resetting a group's offsets (dry run first)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from engine.ops.offsets import (
    GroupLag,
    ResetTarget,
    UnknownGroupError,
    apply_reset,
    group_lag,
    plan_reset,
)
from engine.ops.output import AsJson, print_json
from engine.runtime.kafka.probe import require_kafka
from engine.settings import get_settings

offsets_app = typer.Typer(
    invoke_without_command=True,
    help="Consumer group lag; reset a group's offsets to replay.",
)
console = Console()


@offsets_app.callback()
def show_lag(
    ctx: typer.Context,
    group_prefix: Annotated[
        str | None,
        typer.Option("--group-prefix", help="Only groups starting with this (default: leadflow.)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Print committed offset, end and lag of every partition of every consumer group."""
    if ctx.invoked_subcommand is not None:
        return
    settings = get_settings()
    require_kafka(settings)
    groups = group_lag(settings, group_prefix)
    if not groups:
        shown = "leadflow." if group_prefix is None else group_prefix
        raise UnknownGroupError(f"no consumer group matches the prefix {shown!r}")
    if as_json:
        print_json([_as_json(g) for g in groups])
        return
    # Names fold rather than end in "…": an operator copies them into `offsets reset`.
    table = Table(
        Column("group", overflow="fold"), Column("topic", overflow="fold"),
        "partition", "committed", "end", "lag", "state",
    )  # fmt: skip
    for group in groups:
        if not group.partitions:
            table.add_row(group.group, "-", "-", "-", "-", "-", _state(group.state, group.members))
        for p in group.partitions:
            table.add_row(
                group.group,
                p.topic,
                str(p.partition),
                str(p.committed),
                str(p.end),
                str(p.lag),
                _state(group.state, group.members),
            )
    console.print(table)


def _as_json(group: GroupLag) -> dict[str, object]:
    """A group as ``--json`` shows it: the lag is the group's, per partition its offsets."""
    partitions = [
        {"topic": p.topic, "partition": p.partition, "committed": p.committed, "end": p.end}
        for p in group.partitions
    ]
    return {
        "group": group.group,
        "state": group.state,
        "members": group.members,
        "partitions": partitions,
        "lag": group.lag,
    }


def _state(state: str, members: int) -> str:
    return f"{state} ({members} members)" if members else state


@offsets_app.command()
def reset(
    group: Annotated[str, typer.Argument(help="Consumer group id, e.g. leadflow.demo.step.score.")],
    to_earliest: Annotated[
        bool, typer.Option("--to-earliest", help="Move to the oldest retained offset.")
    ] = False,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            help="ISO 8601 time (UTC unless it has an offset): the first record at or after it.",
        ),
    ] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Apply the moves (default: only print them).")
    ] = False,
) -> None:
    """Move a group's committed offsets; a dry run unless --execute. The group must be stopped."""
    if to_earliest == (to_time is not None):
        raise typer.BadParameter("give exactly one of --to-earliest or --to-time")
    target: ResetTarget
    if to_time is None:
        target = "earliest"
    else:
        try:
            target = datetime.fromisoformat(to_time)
        except ValueError as exc:
            raise typer.BadParameter(f"not an ISO 8601 time: {to_time!r}") from exc
    settings = get_settings()
    require_kafka(settings)
    moves = plan_reset(settings, group, target)
    table = Table("topic", "partition", "current", "target", "delta", title=group)
    for m in moves:
        table.add_row(m.topic, str(m.partition), str(m.current), str(m.target), f"{m.delta:+d}")
    console.print(table)
    if not moves:
        console.print("the group has no committed offsets: nothing to move")
        return
    if not execute:
        console.print("dry run: nothing changed; add --execute to apply")
        return
    apply_reset(settings, group, moves)
    console.print(f"reset {len(moves)} partition(s) of {group}")
