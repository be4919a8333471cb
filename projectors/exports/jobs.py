"""Export jobs in Postgres: requested, claimed under a lease, finished, downloaded.

The table is the queue, so a job outlives the API process that accepted it.
Workers claim with ``FOR UPDATE SKIP LOCKED`` (never two on one job, never
waiting on each other) and hold a lease they renew while working; a job left
``processing`` by a worker that died is claimed again once its lease expires.
Only the holder of the current lease token may renew it or record an
outcome. A job whose workers die ``max_attempts`` times is given up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from engine.objects.contract import directory
from engine.pgmigrate import MigrationChangedError, apply_migrations, load_migrations
from engine.settings import Settings
from projectors.errors import MigrationError
from projectors.exports.errors import LeaseLostError, UnknownExportError
from projectors.exports.formats import FORMATS
from projectors.params import iso_utc, iso_utc_or_none
from projectors.selection import ExportFormat, ExportQuery
from projectors.store import Connection, checked_schema, connect, translate_errors

log = structlog.get_logger(__name__)

Status = Literal["created", "processing", "complete", "error"]

MAX_ATTEMPTS = 3


def migrate_exports(settings: Settings) -> list[str]:
    """Create the export tables in ``settings.db_schema`` if needed; returns versions applied.

    Idempotent and safe to race: the same per-schema advisory lock as every
    other owner's migrations; versions are tracked in ``export_migrations``.
    """
    schema = checked_schema(settings.db_schema)
    with connect(settings, application_name="leadflow-migrate") as conn:
        try:
            with translate_errors(), conn.transaction(), conn.cursor() as cur:
                done = apply_migrations(
                    cur, schema, "export_migrations", load_migrations("projectors.exports")
                )
        except MigrationChangedError as exc:
            raise MigrationError(str(exc)) from None
    if done:
        log.info("export migrations applied", schema=schema, versions=done)
    return done


@dataclass(frozen=True, slots=True)
class Download:
    by: str
    address: str | None
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"by": self.by, "address": self.address, "at": iso_utc(self.at)}


@dataclass(frozen=True, slots=True)
class ExportJob:
    id: uuid.UUID
    status: Status
    format: ExportFormat
    filters: dict[str, Any]
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    worker: str | None
    lease_token: uuid.UUID | None
    lease_expires_at: datetime | None
    store_kind: Literal["s3", "azure_blob"]
    bucket: str
    object_key: str
    row_count: int | None
    byte_count: int | None
    error: str | None
    # Written with lead data in clear text (its creator held pii:read); else masked.
    clear_text: bool

    def query(self) -> ExportQuery:
        return ExportQuery(format=self.format, **self.filters)

    def as_json(self) -> dict[str, Any]:
        """The job as the API shows it (the lease token stays private to workers)."""
        return {
            "id": str(self.id),
            "status": self.status,
            "format": self.format,
            "compression": "gzip",
            "filters": self.filters,
            "requested_by": self.requested_by,
            "created_at": iso_utc(self.created_at),
            "started_at": iso_utc_or_none(self.started_at),
            "finished_at": iso_utc_or_none(self.finished_at),
            "attempts": self.attempts,
            "rows": self.row_count,
            "bytes": self.byte_count,
            "store": self.store_kind,
            "bucket": self.bucket,
            "object_key": self.object_key,
            "error": self.error,
            "clear_text": self.clear_text,
        }


_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, ExportJob.__dataclass_fields__))


def _job(row: dict[str, Any]) -> ExportJob:
    return ExportJob(**row)


def object_key(prefix: str, job_id: uuid.UUID, export_format: ExportFormat) -> str:
    """Where a job's file goes: one key per job, so a re-run overwrites its own file only."""
    return f"{directory(prefix)}{job_id}.{FORMATS[export_format].extension}.gz"


def create_job(
    conn: Connection,
    settings: Settings,
    query: ExportQuery,
    requested_by: str | None,
    *,
    clear_text: bool = True,
) -> ExportJob:
    """A new ``created`` job for ``query``, to be written to the configured export store."""
    job_id = uuid.uuid4()
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO export_jobs (id, status, format, filters, requested_by, store_kind,"
                " bucket, object_key, clear_text)"
                " VALUES (%s, 'created', %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING {}"
            ).format(_COLUMNS),
            (
                job_id,
                query.format,
                Jsonb(query.filters()),
                requested_by,
                settings.export_store_kind,
                settings.export_bucket,
                object_key(settings.export_prefix, job_id, query.format),
                clear_text,
            ),
        )
        row = cur.fetchone()
    assert row is not None  # INSERT … RETURNING always returns the row
    return _job(row)


def get_job(conn: Connection, job_id: uuid.UUID) -> ExportJob:
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL("SELECT {} FROM export_jobs WHERE id = %s").format(_COLUMNS),
            (job_id,),
        ).fetchone()
    if row is None:
        raise UnknownExportError(f"Unknown export: {job_id}")
    return _job(row)


def active_jobs(conn: Connection, requested_by: str) -> int:
    """How many of ``requested_by``'s jobs are created or processing (the per-key cap)."""
    with translate_errors():
        row = conn.execute(
            "SELECT count(*) FROM export_jobs WHERE requested_by = %s"
            " AND status IN ('created', 'processing')",
            (requested_by,),
        ).fetchone()
    return int(row[0]) if row else 0


def list_jobs(conn: Connection, status: Status | None = None, limit: int = 100) -> list[ExportJob]:
    """The newest jobs first, all or those in ``status``."""
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            sql.SQL(
                "SELECT {} FROM export_jobs WHERE %(status)s::text IS NULL OR status = %(status)s"
                " ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
            ).format(_COLUMNS),
            {"status": status, "limit": limit},
        ).fetchall()
    return [_job(row) for row in rows]


def record_download(conn: Connection, job_id: uuid.UUID, by: str, address: str | None) -> None:
    with translate_errors():
        conn.execute(
            "INSERT INTO export_downloads (job_id, downloaded_by, client_address)"
            " VALUES (%s, %s, %s)",
            (job_id, by, address),
        )


def downloads(conn: Connection, job_id: uuid.UUID) -> list[Download]:
    """Every download of the job's file, oldest first."""
    with translate_errors():
        rows = conn.execute(
            "SELECT downloaded_by, client_address, downloaded_at FROM export_downloads"
            " WHERE job_id = %s ORDER BY downloaded_at",
            (job_id,),
        ).fetchall()
    return [Download(by, address, at) for by, address, at in rows]


# -- workers ------------------------------------------------------------------------------

_NEXT_CLAIMABLE = """
SELECT id, attempts FROM export_jobs
WHERE status = 'created' OR (status = 'processing' AND lease_expires_at < now())
ORDER BY created_at
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

_GIVE_UP = """
UPDATE export_jobs SET status = 'error', finished_at = now(), lease_token = NULL,
    error = %s
WHERE id = %s
"""

_CLAIM = sql.SQL("""
UPDATE export_jobs SET status = 'processing', worker = %s, attempts = attempts + 1,
    started_at = coalesce(started_at, now()), lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => %s)
WHERE id = %s
RETURNING {}
""").format(_COLUMNS)


def claim_job(
    conn: Connection, worker: str, lease_s: float, max_attempts: int = MAX_ATTEMPTS
) -> ExportJob | None:
    """The oldest job waiting (or abandoned: lease expired), now ``processing`` under a
    fresh lease for ``worker``; None when there is nothing to do."""
    while True:
        with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            found = cur.execute(_NEXT_CLAIMABLE).fetchone()
            if found is None:
                return None
            if found["attempts"] >= max_attempts:
                message = (
                    f"gave up after {found['attempts']} attempts: the worker stopped"
                    " (crashed or was killed) before finishing each time"
                )
                cur.execute(_GIVE_UP, (message, found["id"]))
                log.warning("export given up", job=str(found["id"]), attempts=found["attempts"])
                continue
            row = cur.execute(_CLAIM, (worker, lease_s, found["id"])).fetchone()
            assert row is not None  # the row is locked by this transaction
            return _job(row)


def _owned(conn: Connection, job: ExportJob, update: str, params: tuple[Any, ...]) -> None:
    """Run ``update`` on the job if this worker still holds its lease; ``LeaseLostError`` if not."""
    owned = sql.SQL("{} WHERE id = %s AND lease_token = %s").format(sql.SQL(update))
    with translate_errors():
        cur = conn.execute(owned, (*params, job.id, job.lease_token))
    if cur.rowcount != 1:
        raise LeaseLostError(f"export {job.id}: lease lost to another worker")


def renew_lease(conn: Connection, job: ExportJob, lease_s: float) -> None:
    """Extend the lease; ``LeaseLostError`` if another worker holds the job now."""
    _owned(
        conn,
        job,
        "UPDATE export_jobs SET lease_expires_at = now() + make_interval(secs => %s)",
        (lease_s,),
    )


def complete_job(conn: Connection, job: ExportJob, rows: int, size: int) -> None:
    _owned(
        conn,
        job,
        "UPDATE export_jobs SET status = 'complete', finished_at = now(), lease_token = NULL,"
        " lease_expires_at = NULL, row_count = %s, byte_count = %s, error = NULL",
        (rows, size),
    )


def fail_job(conn: Connection, job: ExportJob, message: str) -> None:
    """Record a final ``error``; ``message`` is shown to users, so it must hold no secret."""
    _owned(
        conn,
        job,
        "UPDATE export_jobs SET status = 'error', finished_at = now(), lease_token = NULL,"
        " lease_expires_at = NULL, error = %s",
        (message,),
    )


def release_job(conn: Connection, job: ExportJob) -> None:
    """Let another worker take the job now, not at lease expiry: this one is shutting
    down, which is not a failed attempt."""
    _owned(
        conn,
        job,
        "UPDATE export_jobs SET lease_expires_at = now(), attempts = attempts - 1",
        (),
    )
