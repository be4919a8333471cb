"""``leadflow retention status`` and ``leadflow retention apply [--execute]``."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from engine.ops.output import AsJson, print_json
from engine.ops.retention import retention_steps
from engine.retention import Holding
from engine.runtime.kafka.probe import require_kafka
from engine.runtime.registry import read_flows
from engine.settings import get_settings

log = structlog.get_logger(__name__)

retention_app = typer.Typer(
    no_args_is_help=True,
    help="What every store holds against the flows' retention; remove what has expired.",
)
console = Console()
err = Console(stderr=True)

At = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Judge as of this ISO 8601 time (UTC unless it has an offset), not now: "
        "what a run then would remove.",
    ),
]


def _at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@retention_app.command("status")
def status(as_json: AsJson = False, at: At = None) -> None:
    """Per store: what it holds, the oldest item, what the next run would remove. Changes
    nothing."""
    _run(execute=False, as_json=as_json, at=_at(at))


@retention_app.command("apply")
def apply(
    execute: Annotated[
        bool, typer.Option("--execute", help="Remove what has expired (default: a dry run).")
    ] = False,
    as_json: AsJson = False,
    at: At = None,
) -> None:
    """Set the topics' retention, drop expired partitions, prune the rollups and state
    tables, delete expired export files and objects. A dry run unless ``--execute``."""
    _run(execute=execute, as_json=as_json, at=_at(at))
    if not execute:
        err.print("dry run: nothing removed (add --execute)")


def _run(*, execute: bool, as_json: bool, at: datetime) -> None:
    settings = get_settings()
    require_kafka(settings)
    flows = read_flows(settings)
    steps = retention_steps(settings, flows, at, execute=execute)
    held: list[Holding] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with progress:
        task = progress.add_task("retention", total=len(steps))
        for name, step in steps:
            progress.update(task, description=name)
            held += step()
            progress.advance(task)
    log.info(
        "retention run",
        execute=execute,
        at=at.isoformat(),
        flows=len(flows),
        expired=sum(h.expired for h in held),
        removed=sum(h.removed for h in held),
    )
    if as_json:
        print_json([asdict(h) for h in held])
        return
    table = Table(
        Column("store", overflow="fold"), Column("item", overflow="fold"), "held", "oldest",
        "expired", "removed" if execute else "would remove", Column("how", overflow="fold"),
    )  # fmt: skip
    for h in held:
        table.add_row(
            h.store,
            h.item,
            f"{h.held:,} {h.unit}",
            h.oldest.isoformat(timespec="seconds") if h.oldest else "-",
            f"{h.expired:,}",
            f"{h.removed:,}" if execute else f"{h.expired:,}",
            h.action,
        )
    console.print(table)
