"""What a scheduled export is, as a flow file and the API both declare it: a cron
expression, a destination (S3, Azure Blob or a local folder) and how often to try.

Kept here, low in the engine, so a flow file is checked when it is loaded; the scheduler
that runs them is ``projectors.exports.scheduler``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, Field

from engine.model import ConfigModel

_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def checked_cron(expression: str) -> str:
    """``expression`` if it is a five-field cron expression (UTC); ``ValueError`` if not."""
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"not a cron expression ({exc}): {expression!r}") from None
    return expression


Cron = Annotated[
    str,
    Field(max_length=200, description="five fields, UTC, e.g. '0 2 * * *'"),
    AfterValidator(checked_cron),
]


class ObjectOutput(ConfigModel):
    """An S3 bucket or Azure Blob container, with the credentials the export store uses."""

    kind: Literal["s3", "azure_blob"]
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    prefix: Annotated[str, Field(max_length=500)] = "scheduled-exports"


def _relative(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or ".." in parts:
        raise ValueError("a path inside LEADFLOW_EXPORT_LOCAL_DIR: relative, without '..'")
    return "/".join(p for p in parts if p)


class LocalOutput(ConfigModel):
    """A folder under the server's ``LEADFLOW_EXPORT_LOCAL_DIR`` (never elsewhere: an API
    key may choose the folder, so it must not choose any path on the server)."""

    kind: Literal["local"]
    path: Annotated[str, Field(max_length=500), AfterValidator(_relative)] = ""


Output = Annotated[ObjectOutput | LocalOutput, Field(discriminator="kind")]
MaxAttempts = Annotated[int, Field(ge=1, le=20)]
KeepFiles = Annotated[
    int | None,
    Field(ge=1, le=100_000, description="keep the newest N files, delete older (default: all)"),
]


class FlowExportFilters(ConfigModel):
    """Which of the flow's events a flow file's scheduled export holds (all by default)."""

    type: Annotated[
        tuple[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")], ...],
        Field(max_length=50),
    ] = ()
    outcome: Literal["success", "failure", "error"] | None = None
    step_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    format: Literal["csv", "jsonl"] = "csv"


class FlowScheduledExport(ConfigModel):
    """A flow file's ``exports:`` entry: the flow's events on a cron schedule.

    Masked unless ``clear_text`` (applying a flow needs ``flows:admin``, which decides).
    """

    id: Annotated[str, Field(pattern=_ID)]
    cron: Cron
    destination: Output
    filters: FlowExportFilters = FlowExportFilters()
    max_attempts: MaxAttempts = 3
    keep_files: KeepFiles = None
    clear_text: bool = False
