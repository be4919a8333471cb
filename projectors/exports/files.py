"""``leadflow export``'s output: the export streamed to a file (with progress) or stdout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from engine.settings import Settings
from projectors.exports.query import ExportStream
from projectors.selection import ExportQuery
from projectors.store import connect


def write_export(
    settings: Settings, query: ExportQuery, target: Path | None, console: Console
) -> int:
    """Write the export to ``target`` (stdout when None); returns the number of events.

    Progress goes to ``console`` (stderr) only when writing a file: on stdout
    it would mix with the data whenever both are the same terminal.
    """
    with connect(settings, application_name="leadflow-export") as conn:
        stream = ExportStream(conn, query)
        try:
            if target is None:
                _to_stdout(stream)
            else:
                _to_file(stream, target, console)
        finally:
            stream.close()
    return stream.rows


def _to_stdout(stream: ExportStream) -> None:
    out = sys.stdout.buffer
    try:
        for chunk in stream:
            out.write(chunk)
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at devnull
        # so the interpreter's flush at exit does not raise again (Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _to_file(stream: ExportStream, target: Path, console: Console) -> None:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        TextColumn("{task.completed:,} events"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with target.open("wb") as out, progress:
        task = progress.add_task(f"exporting to {target}", total=None)
        for chunk in stream:
            out.write(chunk)
            progress.update(task, completed=stream.rows)
