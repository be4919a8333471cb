"""Exports over HTTP: streamed files (``GET …/export``) and export jobs (``/exports``).

Mount this router before ``projectors.api``'s: ``/events/export`` would
otherwise be taken for the event whose id is "export".

The export worker runs as a thread of the API process (this router's
lifespan) unless ``LEADFLOW_EXPORT_WORKER_IN_API=false``; any number of API
processes and ``leadflow exports work`` processes share the job queue.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from engine.access.guard import EXPORTS, AccessDeniedError, Exporter, hide_foreign, only_flow
from engine.access.scopes import Principal
from engine.access.store import record_pii_read
from engine.destinations import Destination
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError, ObjectNotFoundError
from engine.settings import Settings
from engine.web.responses import answers, as_text, guarded
from projectors.errors import StoreUnavailableError
from projectors.exports import jobs
from projectors.exports.errors import UnknownExportError
from projectors.exports.jobs import ExportJob, Status
from projectors.exports.query import ExportStream, check_cursors
from projectors.exports.runner import ExportWorker
from projectors.params import cursor_error
from projectors.search import UnknownCursorError
from projectors.selection import ExportQuery, FlowExportQuery
from projectors.store import Connection, api_connection, connect


@asynccontextmanager
async def _export_worker(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.export_worker_in_api:
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=ExportWorker(settings).run, args=(stop,), name="export-worker", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()  # a job in progress is released to another worker, not finished
        await anyio.to_thread.run_sync(thread.join)


router = APIRouter(
    tags=["exports"],
    lifespan=_export_worker,
    dependencies=[Depends(EXPORTS)],
    responses={**guarded(), **answers(503)},
)
_EXPORT_FILE = as_text(
    "The events as CSV (format=csv, the default) or JSON lines (format=jsonl)",
    "text/csv",
    "application/x-ndjson",
)
_GZIP_FILE = as_text("The job's gzip'd file", "application/gzip")

log = structlog.get_logger(__name__)
_UNAVAILABLE = "The event store is unavailable; retry later"


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


# -- streamed exports ---------------------------------------------------------------------


def _filename(query: ExportQuery) -> str:
    # Only characters that need no quoting in a Content-Disposition header.
    flow = re.sub(r"[^A-Za-z0-9_.-]", "", query.flow_id or "")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"leadflow-events-{flow}-{stamp}" if flow else f"leadflow-events-{stamp}"
    return f"{name}.{query.format}"


def _stream(settings: Settings, query: ExportQuery, reader: Principal) -> StreamingResponse:
    query = query.model_copy(update={"flow_id": only_flow(reader, query.flow_id)})
    try:
        conn = connect(settings, application_name="leadflow-export")
        # Each fetch of the stream is a statement: none may run past the API's timeout.
        conn.execute(f"SET statement_timeout = {int(settings.api_statement_timeout_ms)}")
    except StoreUnavailableError as exc:
        raise HTTPException(503, detail=_UNAVAILABLE) from exc
    try:
        if reader.sees_pii:
            # An export is a read of every lead in it: audited by its filters, not its ids.
            record_pii_read(conn, reader.key_id, f"GET export {query.filters()}", ())
        stream = ExportStream(conn, query, clear_text=reader.sees_pii)
    except StoreUnavailableError as exc:
        conn.close()
        raise HTTPException(503, detail=_UNAVAILABLE) from exc
    except UnknownCursorError as exc:
        conn.close()
        raise cursor_error(exc) from None
    except BaseException:
        conn.close()
        raise

    def close() -> None:
        stream.close()
        conn.close()

    def body() -> Iterator[bytes]:
        try:
            yield from stream
        finally:
            close()

    return StreamingResponse(
        body(),
        media_type=stream.format.content_type,
        headers={"Content-Disposition": f'attachment; filename="{_filename(query)}"'},
        # Also when the body was never iterated (the client left first).
        background=BackgroundTask(close),
    )


@router.get("/events/export", response_class=StreamingResponse, responses=_EXPORT_FILE)
def export_events(
    settings: SettingsDep, query: Annotated[ExportQuery, Query()], reader: Exporter
) -> Response:
    """Every matching event as CSV or JSON lines, streamed in constant memory, ordered by id."""
    return _stream(settings, query, reader)


@router.get(
    "/flows/{flow_id}/events/export", response_class=StreamingResponse, responses=_EXPORT_FILE
)
def export_flow_events(
    flow_id: str,
    settings: SettingsDep,
    query: Annotated[FlowExportQuery, Query()],
    reader: Exporter,
) -> Response:
    """The flow's matching events as CSV or JSON lines (see ``GET /events/export``)."""
    return _stream(settings, query.for_flow(flow_id), reader)


# -- export jobs --------------------------------------------------------------------------

_migrated: set[str] = set()
_migrating = threading.Lock()


def _jobs_connection(settings: SettingsDep) -> Iterator[Connection]:
    try:
        # Once per process and schema: the job tables appear with the first request.
        with _migrating:
            if settings.db_schema not in _migrated:
                jobs.migrate_exports(settings)
                _migrated.add(settings.db_schema)
        with api_connection(settings) as conn:
            yield conn
    except StoreUnavailableError as exc:
        raise HTTPException(503, detail=_UNAVAILABLE) from exc


JobsConn = Annotated[Connection, Depends(_jobs_connection)]
User = Annotated[
    str | None,
    Header(
        alias="X-Leadflow-User",
        max_length=200,
        description="Who is asking, recorded beside the key's id",
    ),
]


def _who(reader: Principal, user: str | None) -> str:
    """The key's id (what the per-key job cap counts), with the user it names if any."""
    return f"{reader.key_id} ({user})" if user else reader.key_id


def _job_json(request: Request, job: ExportJob) -> dict[str, Any]:
    answer = job.as_json()
    answer["download_url"] = (
        str(request.url_for("download_export", job_id=str(job.id)))
        if job.status == "complete"
        else None
    )
    return answer


def _get_job(conn: Connection, job_id: uuid.UUID, reader: Principal) -> ExportJob:
    try:
        job = jobs.get_job(conn, job_id)
    except UnknownExportError as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    hide_foreign(reader, job.filters.get("flow_id"), f"Unknown export: {job_id}")
    return job


@router.post("/exports", status_code=201, responses={**guarded(413), **answers(400)})
def create_export(
    body: ExportQuery,
    request: Request,
    response: Response,
    settings: SettingsDep,
    conn: JobsConn,
    reader: Exporter,
    user: User = None,
) -> dict[str, Any]:
    """Queue an export job; a worker writes the gzip'd file (masked unless the key holds
    ``pii:read``) to object storage. A key has at most ``max_export_jobs_per_key`` jobs
    waiting or running at once (429)."""
    body = body.model_copy(update={"flow_id": only_flow(reader, body.flow_id)})
    try:
        check_cursors(conn, body)
    except UnknownCursorError as exc:
        raise cursor_error(exc, where="body") from None
    if jobs.active_jobs(conn, reader.key_id) >= settings.max_export_jobs_per_key:
        raise AccessDeniedError(
            429,
            "too_many_exports",
            f"This key has {settings.max_export_jobs_per_key} export jobs waiting or running;"
            " retry once one is complete",
            {"Retry-After": "30"},
        )
    job = jobs.create_job(conn, settings, body, reader.key_id, clear_text=reader.sees_pii)
    if user is not None:
        log.info("export job created", job=str(job.id), key_id=reader.key_id, user=user)
    response.headers["Location"] = str(request.url_for("show_export", job_id=str(job.id)))
    return _job_json(request, job)


@router.get("/exports")
def list_exports(
    request: Request,
    conn: JobsConn,
    reader: Exporter,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Export jobs, newest first (a flow-restricted key sees its flows' only)."""
    return [
        _job_json(request, job)
        for job in jobs.list_jobs(conn, status, limit)
        if reader.sees_flow(job.filters.get("flow_id"))
    ]


@router.get("/exports/{job_id}", name="show_export", responses=answers(404))
def show_export(
    job_id: uuid.UUID, request: Request, conn: JobsConn, reader: Exporter
) -> dict[str, Any]:
    """One job: its status, its file once complete, and who downloaded that file when."""
    answer = _job_json(request, _get_job(conn, job_id, reader))
    answer["downloads"] = [d.as_json() for d in jobs.downloads(conn, job_id)]
    return answer


@router.get(
    "/exports/{job_id}/download",
    name="download_export",
    response_class=StreamingResponse,
    responses={**_GZIP_FILE, **answers(404, 409, 410, 502)},
)
def download_export(
    job_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    conn: JobsConn,
    reader: Exporter,
    user: User = None,
) -> Response:
    """The job's gzip'd file, streamed from object storage; the download is recorded
    (the key's id, and ``X-Leadflow-User`` if given) as it starts. A file written in
    clear text needs ``pii:read``."""
    job = _get_job(conn, job_id, reader)
    if job.clear_text and not reader.sees_pii:
        raise AccessDeniedError(
            403, "forbidden", "This export holds lead data in clear text: it needs pii:read"
        )
    if job.status != "complete":
        detail = f"Export {job_id} is {job.status}; its file can be downloaded once it is complete"
        raise HTTPException(409, detail=f"{detail} ({job.error})" if job.error else detail)
    store = open_store(Destination(kind=job.store_kind, bucket=job.bucket), settings, threads=1)
    try:
        chunks = store.read_chunks(job.object_key)
    except ObjectNotFoundError as exc:
        store.close()
        raise HTTPException(410, detail=f"The file of export {job_id} is gone") from exc
    except DestinationError as exc:
        store.close()  # the message names the store and the cause, never a credential
        raise HTTPException(502, detail=f"Object storage failed: {exc}") from exc
    address = request.client.host if request.client else None
    jobs.record_download(conn, job.id, _who(reader, user), address)
    if job.clear_text:
        record_pii_read(conn, reader.key_id, f"GET /exports/{job.id}/download", ())

    closed = threading.Event()

    def close() -> None:
        if not closed.is_set():
            closed.set()
            store.close()

    def body() -> Iterator[bytes]:
        try:
            yield from chunks
        finally:
            close()

    filename = job.object_key.rsplit("/", 1)[-1]
    return StreamingResponse(
        body(),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        background=BackgroundTask(close),
    )
