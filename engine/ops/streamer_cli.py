"""``leadflow streamer``: verify, enable and disable destinations, their status, and backfills."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from engine.flows import Flow, load_flow
from engine.ops.output import AsJson, print_json
from engine.runtime.kafka.probe import require_kafka
from engine.runtime.registry import UnknownFlowError, read_flows
from engine.settings import Settings, get_settings
from streamers.backfill import backfill as run_backfill
from streamers.lifecycle import Lifecycle, Outcome, find_destination, verify_flow
from streamers.status import destination_status

streamer_app = typer.Typer(
    no_args_is_help=True, help="Event streaming destinations: lifecycle, status, backfill."
)
console = Console(stderr=True)

FlowFile = Annotated[
    Path | None,
    typer.Option("--flow-file", "-f", help="Read the flow from this file, not the registry."),
]


def _flow(settings: Settings, flow_id: str, flow_file: Path | None) -> Flow:
    """The flow a command names; Kafka is probed first, as every such command talks to it."""
    if flow_file is not None:
        flow = load_flow(flow_file)
        if flow.id != flow_id:
            raise typer.BadParameter(f"{flow_file} defines flow {flow.id}, not {flow_id}")
        require_kafka(settings)
        return flow
    require_kafka(settings)
    return _registry_flows(settings, flow_id)[0]


def _registry_flows(settings: Settings, flow_id: str | None = None) -> list[Flow]:

    flows = read_flows(settings)
    if flow_id is None:
        return flows
    chosen = [f for f in flows if f.id == flow_id]
    if not chosen:
        raise UnknownFlowError(flow_id)
    return chosen


def _print_outcome(outcome: Outcome) -> None:
    colour = "green" if outcome.state == "active" and not outcome.verification_failed else "yellow"
    what = f"[{colour}]{outcome.state or 'unrecorded'}[/]"
    console.print(f"  {outcome.destination} ({outcome.name}): {what} - {outcome.reason}")


def verify_applied_destinations(settings: Settings, flow: Flow) -> bool:
    """Verify the enabled destinations of a flow just applied and print each outcome.

    The flow stays applied when one fails: its steps and its other destinations
    must not wait for one bucket's permissions. The failing destination is
    recorded deactivated (with the reason), keeps its position, and resumes
    with ``leadflow streamer enable``. Returns whether all passed.
    """

    with closing(Lifecycle(settings)) as lifecycle:
        outcomes = verify_flow(lifecycle, flow, by="flow apply")
    if outcomes:
        console.print("destinations:")
    for outcome in outcomes:
        _print_outcome(outcome)
    failed = [o for o in outcomes if o.verification_failed]
    if failed:
        console.print(
            f"[yellow]{len(failed)} destination(s) failed verification and will not receive "
            f"events[/]; fix them, then `leadflow streamer enable {flow.id} DESTINATION`"
        )
    return not failed


@streamer_app.command()
def verify(
    flow_id: Annotated[str, typer.Argument(help="Flow id.")],
    destination: Annotated[
        str | None, typer.Argument(help="Destination key (default: all).")
    ] = None,
    flow_file: FlowFile = None,
) -> None:
    """Write, read back and delete a probe object; record the destination active or deactivated."""

    settings = get_settings()
    flow = _flow(settings, flow_id, flow_file)
    with closing(Lifecycle(settings)) as lifecycle:
        outcomes = verify_flow(
            lifecycle, flow, [destination] if destination else None, by="leadflow streamer verify"
        )
    for outcome in outcomes:
        _print_outcome(outcome)
    if not outcomes:
        console.print("no enabled destinations to verify")
    if any(o.verification_failed for o in outcomes):
        raise typer.Exit(1)


@streamer_app.command()
def enable(
    flow_id: Annotated[str, typer.Argument(help="Flow id.")],
    destination: Annotated[str, typer.Argument(help="Destination key.")],
    flow_file: FlowFile = None,
) -> None:
    """Verify the destination again; if it passes, streaming resumes where it paused."""

    settings = get_settings()
    flow = _flow(settings, flow_id, flow_file)
    with closing(Lifecycle(settings)) as lifecycle:
        outcome = lifecycle.enable(flow, find_destination(flow, destination))
    _print_outcome(outcome)
    if outcome.verification_failed:
        raise typer.Exit(1)


@streamer_app.command()
def disable(
    flow_id: Annotated[str, typer.Argument(help="Flow id.")],
    destination: Annotated[str, typer.Argument(help="Destination key.")],
    flow_file: FlowFile = None,
) -> None:
    """Stop streaming to the destination until `enable`; its position is kept."""

    settings = get_settings()
    flow = _flow(settings, flow_id, flow_file)
    with closing(Lifecycle(settings)) as lifecycle:
        outcome = lifecycle.disable(flow.id, find_destination(flow, destination))
    _print_outcome(outcome)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


@streamer_app.command()
def status(
    flow_id: Annotated[str | None, typer.Argument(help="Flow id (default: every flow).")] = None,
    flow_file: FlowFile = None,
    as_json: AsJson = False,
) -> None:
    """Per destination: state, lag, last object written, last error."""

    settings = get_settings()
    require_kafka(settings)
    flows = [load_flow(flow_file)] if flow_file else _registry_flows(settings, flow_id)
    rows = destination_status(settings, flows)
    if as_json:
        print_json(rows)  # lag null: Kafka did not say
        return
    table = Table("flow", "destination", "state", "lag", "last object", "last error")
    colours = {"active": "green", "deactivated": "red", "disabled": "yellow"}
    for row in rows:
        state = f"[{colours.get(row.state, 'dim')}]{row.state}[/]"
        if row.reason and row.state != "active":
            state += f"\n{row.reason}"
        table.add_row(
            row.flow_id,
            f"{row.destination}\n[dim]{row.name}[/]",
            state,
            "?" if row.lag is None else f"{row.lag:,}",
            f"{row.last_object_key}\n{_when(row.last_object_at)}" if row.last_object_key else "-",
            f"{row.last_error}\n{_when(row.last_error_at)}" if row.last_error else "-",
        )
    Console().print(table)


def _time(text: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{option}: not an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@streamer_app.command()
def backfill(
    flow_id: Annotated[str, typer.Argument(help="Flow id.")],
    destination: Annotated[str, typer.Argument(help="Destination key.")],
    start: Annotated[str, typer.Option("--from", help="ISO 8601 (UTC without an offset).")],
    end: Annotated[str | None, typer.Option("--to", help="Exclusive; default: now.")] = None,
    flow_file: FlowFile = None,
) -> None:
    """Write the events recorded in [--from, --to) to one destination, from the topics.

    Idempotent: objects are created only where absent, at the keys the streamer uses.
    """

    settings = get_settings()
    flow = _flow(settings, flow_id, flow_file)
    target = find_destination(flow, destination)
    begin, until = _time(start, "--from"), _time(end, "--to") if end else None
    columns = (
        TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("records", total=None)
        result = run_backfill(
            settings, flow, target, begin, until,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    console.print(
        f"{result.in_range:,} events in range: {result.created:,} objects created, "
        f"{result.existed:,} already there, {result.dead_lettered:,} dead letters"
    )
