"""``leadflow replay`` and ``leadflow projections``: rebuild a projection blue/green, list and
drop its generations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from engine.objects.destination import open_store
from engine.ops.output import AsJson, print_json
from engine.runtime.kafka.probe import require_kafka
from engine.runtime.stopping import install_stop_handlers
from engine.settings import get_settings
from projectors.archive import archive_destination
from projectors.archive_replay import ArchiveRebuild, ArchiveReplayResult
from projectors.generations import drop, generations
from projectors.replay import Rebuild
from projectors.store import connect

projections_app = typer.Typer(
    invoke_without_command=True, help="Projection generations: list, drop retired ones."
)
console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Events per second: rich's recent-samples rate while running, the average once done."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(
            f"{speed:,.0f} events/s" if speed else "- events/s", style="progress.data.speed"
        )


def replay(
    projection: Annotated[str, typer.Argument(help="timeline or analytics")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Rebuild from each topic's oldest record.")
    ] = False,
    from_time: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="ISO 8601 time (UTC unless it has an offset): the new generation holds only "
            "the events recorded from then on.",
        ),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Drop an interrupted rebuild and start over."),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 2000,
    from_archive: Annotated[
        str | None,
        typer.Option(
            "--from-archive",
            help="s3://bucket/prefix or azure://container/prefix: rebuild from the objects "
            "the streamer wrote there, then hand over to the topics where the archive ends.",
        ),
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="With --from-archive: read archived objects up to this time's hour; the "
            "topics hold the rest.",
        ),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="With --from-archive: report unreadable objects and lines and go on "
            "(without it, they stop the rebuild before it switches).",
        ),
    ] = False,
) -> None:
    """Rebuild PROJECTION from the topics (or an archive, then the topics) into a new
    generation while the current one keeps serving, then switch atomically. Interrupted
    (Ctrl-C) while reading topics, it resumes when run again."""

    if from_beginning and from_time is not None:
        raise typer.BadParameter("give --from-beginning or --from, not both")
    if from_archive is None and (to_time is not None or skip_bad):
        raise typer.BadParameter("--to and --skip-bad go with --from-archive")
    start, end = _time(from_time), _time(to_time)
    require_kafka(get_settings())
    stop = threading.Event()
    install_stop_handlers(stop)
    with _progress() as progress:
        task = progress.add_task(f"rebuilding {projection}", total=None)

        def show(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        if from_archive is not None:
            archived = _archive_replay(
                progress, projection, from_archive, start, end, skip_bad, batch_size, show, stop
            )
            result = archived.topics
        else:
            result = Rebuild(
                get_settings(),
                projection,
                from_time=start,
                restart=restart,
                batch_size=batch_size,
                on_progress=show,
            ).run(stop)
    rate = result.records / result.seconds if result.seconds else 0.0
    summary = (
        f"{result.records:,} events in {result.seconds:.1f}s ({rate:,.0f}/s)"
        f"{' after resuming' if result.resumed else ''}"
    )
    if result.switched:
        console.print(
            f"{projection}: generation {result.generation.number} is active "
            f"(schema {result.generation.schema}); {summary}"
        )
        return
    console.print(
        f"{projection}: interrupted; generation {result.generation.number} is still building "
        f"({summary}). Run the same command again to resume."
    )
    raise typer.Exit(130)


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


def _archive_replay(
    progress: Progress,
    projection: str,
    url: str,
    start: datetime | None,
    end: datetime | None,
    skip_bad: bool,
    batch_size: int,
    show: Callable[[int, int], None],
    stop: threading.Event,
) -> ArchiveReplayResult:
    """The archive part of ``replay --from-archive``, with its own progress bar (objects)."""
    settings = get_settings()
    objects = progress.add_task(f"archive {url}", total=None)

    def show_archive(done: int, total: int, events: int) -> None:
        progress.update(objects, completed=done, total=total,
                        description=f"archive {url} ({events:,} events)")  # fmt: skip

    store = open_store(archive_destination(url), settings, threads=8)
    try:
        result = ArchiveRebuild(
            settings,
            projection,
            store,
            archive_destination(url).prefix,
            from_time=start,
            to_time=end,
            skip_bad=skip_bad,
            batch_size=batch_size,
            on_archive=show_archive,
            on_progress=show,
        ).run(stop)
    finally:
        store.close()
    console.print(
        f"{projection}: {result.archive_events:,} events from {result.archive_objects:,} "
        f"archived objects in {result.seconds:.1f}s"
        + (f", {len(result.bad)} bad input(s) skipped" if result.bad else "")
    )
    return result


@projections_app.callback()
def list_generations(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Every generation of every projection, with its state and schema."""
    if ctx.invoked_subcommand is not None:
        return

    settings = get_settings()
    with connect(settings) as conn:
        found = generations(conn, settings.db_schema)
    if as_json:
        print_json(found)
        return
    table = Table("projection", "generation", "state", "schema", "from", "created", "activated")
    for g in found:
        table.add_row(
            g.projection,
            str(g.number),
            g.state,
            g.schema,
            g.started_from.isoformat() if g.started_from else "beginning",
            g.created_at.isoformat(timespec="seconds"),
            g.activated_at.isoformat(timespec="seconds") if g.activated_at else "-",
        )
    Console().print(table)


@projections_app.command("drop")
def drop_generation(
    projection: Annotated[str, typer.Argument(help="timeline or analytics")],
    generation: Annotated[int, typer.Argument(help="A retired (or building) generation.")],
) -> None:
    """Drop a retired or interrupted generation's schema; the active one is refused."""

    settings = get_settings()
    with connect(settings) as conn:
        found = [
            g for g in generations(conn, settings.db_schema, projection) if g.number == generation
        ]
        if not found:
            raise typer.BadParameter(f"{projection} has no generation {generation}")
        try:
            drop(conn, found[0])
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    console.print(f"dropped generation {generation} of {projection} ({found[0].schema})")
