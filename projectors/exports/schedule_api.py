"""Scheduled exports over HTTP: schedules (``/export-schedules``) and their runs
(``/task-runs``), under the ``exports`` scope like export jobs.

A schedule's file is masked unless its creator's key holds ``pii:read``, as for a job;
a key restricted to some flows creates, sees and disables only schedules of its flows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from engine.access.guard import EXPORTS, Exporter, hide_foreign, only_flow
from engine.access.scopes import Principal
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.postgres import migrate_state
from engine.web.responses import answers, guarded
from projectors.errors import StoreUnavailableError
from projectors.exports import schedules, task_runs
from projectors.exports.errors import UnknownScheduleError
from projectors.exports.query import check_cursors
from projectors.exports.schedules import RunStatus, Schedule, ScheduleRequest
from projectors.params import cursor_error
from projectors.search import UnknownCursorError
from projectors.store import Connection, api_connection

router = APIRouter(
    tags=["exports"], dependencies=[Depends(EXPORTS)], responses={**guarded(), **answers(503)}
)
_UNAVAILABLE = "The event store is unavailable; retry later"

_migrated: set[str] = set()
_migrating = threading.Lock()


def _connection(request: Request) -> Iterator[Connection]:
    settings: Settings = request.app.state.settings
    try:
        # Once per process and schema: the schedule tables appear with the first request.
        with _migrating:
            if settings.db_schema not in _migrated:
                migrate_state(settings)
                _migrated.add(settings.db_schema)
        with api_connection(settings) as conn:
            yield conn
    except (StoreUnavailableError, StateUnavailableError) as exc:
        raise HTTPException(503, detail=_UNAVAILABLE) from exc


Conn = Annotated[Connection, Depends(_connection)]


def _get(conn: Connection, schedule_id: str, reader: Principal) -> Schedule:
    unknown = f"Unknown export schedule: {schedule_id}"
    try:
        schedule = schedules.get_schedule(conn, schedule_id)
    except UnknownScheduleError:
        raise HTTPException(404, detail=unknown) from None
    hide_foreign(reader, schedule.flow_id, unknown)
    return schedule


@router.post("/export-schedules", status_code=201, responses={**guarded(413), **answers(400)})
def create_schedule(
    body: ScheduleRequest, request: Request, response: Response, conn: Conn, reader: Exporter
) -> dict[str, Any]:
    """A new schedule: the export ``query`` written on each time of ``cron`` (UTC) to
    ``destination`` (``s3``/``azure_blob`` with the export store's credentials, or
    ``local``: a folder under ``LEADFLOW_EXPORT_LOCAL_DIR``); a failed run is tried
    again with a doubling backoff, ``max_attempts`` times in all."""
    query = body.query.model_copy(update={"flow_id": only_flow(reader, body.query.flow_id)})
    body = body.model_copy(update={"query": query})
    try:
        check_cursors(conn, query)  # as for a job: a mistyped id must not bound every run
    except UnknownCursorError as exc:
        raise cursor_error(exc, where="body") from None
    schedule = schedules.create_schedule(
        conn, body, reader.key_id, datetime.now(UTC), clear_text=reader.sees_pii
    )
    response.headers["Location"] = str(
        request.url_for("show_export_schedule", schedule_id=schedule.id)
    )
    return schedule.as_json()


@router.get("/export-schedules")
def list_schedules(conn: Conn, reader: Exporter) -> list[dict[str, Any]]:
    """Every schedule, oldest first (a flow-restricted key sees its flows' only)."""
    return [s.as_json() for s in schedules.list_schedules(conn) if reader.sees_flow(s.flow_id)]


@router.get("/export-schedules/{schedule_id}", name="show_export_schedule", responses=answers(404))
def show_schedule(schedule_id: str, conn: Conn, reader: Exporter) -> dict[str, Any]:
    """One schedule, with its 20 latest runs."""
    answer = _get(conn, schedule_id, reader).as_json()
    answer["runs"] = [r.as_json() for r in task_runs.list_runs(conn, schedule_id, limit=20)]
    return answer


@router.delete("/export-schedules/{schedule_id}", status_code=204, responses=answers(404, 409))
def disable_schedule(schedule_id: str, conn: Conn, reader: Exporter) -> Response:
    """Stop the schedule: no more runs (its runs waiting are canceled, one under way
    finishes); its runs stay listed. A flow file's schedule is removed from its flow
    instead (409)."""
    if _get(conn, schedule_id, reader).created_by == schedules.FLOW_FILE:
        detail = f"{schedule_id} is declared in its flow's exports: remove it from the flow"
        raise HTTPException(409, detail=detail)
    schedules.disable_schedule(conn, schedule_id, datetime.now(UTC))
    return Response(status_code=204)


def visible_runs(
    conn: Connection,
    reader: Principal,
    schedule_id: str | None = None,
    status: RunStatus | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The runs ``reader`` may see (of schedules of its flows), newest scheduled time first:
    for ``/task-runs`` and the operator UI's runs page alike."""
    visible = {s.id for s in schedules.list_schedules(conn) if reader.sees_flow(s.flow_id)}
    return [
        run.as_json()
        for run in task_runs.list_runs(conn, schedule_id, status, limit)
        if run.schedule_id in visible
    ]


@router.get("/task-runs")
def list_task_runs(
    conn: Conn,
    reader: Exporter,
    schedule_id: str | None = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Scheduled export runs, newest scheduled time first: status, attempts, the last
    error and where the file went."""
    return visible_runs(conn, reader, schedule_id, status, limit)
