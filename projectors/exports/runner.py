"""The export worker: claims jobs, writes each file to object storage, records the outcome.

A job's file is spooled gzip'd to a temporary file on disk, then uploaded in
parts: memory stays bounded by the read chunk and the upload part, whatever
the export's size. The lease is renewed by a side thread for as long as the
job runs (the upload included), and checked before the upload and the final
write, so a worker that lost its job to another records nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import urlparse

import structlog
from pydantic import ValidationError

from engine.destinations import Destination
from engine.errors import LeadflowError
from engine.objects.destination import open_store
from engine.objects.errors import redact
from engine.settings import Settings
from projectors.errors import StoreUnavailableError
from projectors.exports import jobs
from projectors.exports.errors import LeaseLostError
from projectors.exports.jobs import ExportJob
from projectors.exports.query import CHUNK_ROWS, ExportStream
from projectors.selection import ExportQuery
from projectors.store import Connection, connect

log = structlog.get_logger(__name__)

DEFAULT_LEASE_S = 60.0
_UNAVAILABLE_BACKOFF_S = 5.0


class _Stopped(Exception):
    """The worker is shutting down in the middle of a job."""


class _LeaseKeeper(threading.Thread):
    """Renews a job's lease every third of its length until told to stop."""

    def __init__(self, conn: Connection, job: ExportJob, lease_s: float) -> None:
        super().__init__(name=f"export-lease-{job.id}", daemon=True)
        self._conn, self._job, self._lease_s = conn, job, lease_s
        self.done = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.done.wait(self._lease_s / 3):
            try:
                jobs.renew_lease(self._conn, self._job, self._lease_s)
            except LeaseLostError:
                self.lost = True
                return
            except StoreUnavailableError:
                continue  # the lease may run out meanwhile; the checks before writing tell


class ExportWorker:
    """Runs export jobs one at a time; several workers (threads or processes) share the queue."""

    def __init__(
        self,
        settings: Settings,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = 1.0,
        max_attempts: int = jobs.MAX_ATTEMPTS,
        chunk_rows: int = CHUNK_ROWS,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.chunk_rows = chunk_rows
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_native_id()}"
        self._secrets = settings_secrets(settings)

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, riding out Postgres outages with a backoff."""
        # Said at once: a worker waiting for jobs is otherwise silent (`exports work` printed
        # nothing), indistinguishable from one stuck before it began.
        log.info(
            "export worker started",
            worker=self.name,
            store=self.settings.export_store_kind,
            bucket=self.settings.export_bucket,
            prefix=self.settings.export_prefix,
            poll_s=self.poll_s,
        )
        poll_until_stopped(
            self.settings,
            stop,
            role="export worker",
            migrate=jobs.migrate_exports,
            run_once=self.run_once,
            poll_s=self.poll_s,
            unavailable=(StoreUnavailableError,),
            clean=self._clean,
        )
        log.info("export worker stopped", worker=self.name)

    def run_once(self, conn: Connection, stop: threading.Event | None = None) -> ExportJob | None:
        """Claim one job and run it; the job as recorded afterwards, or None if none was waiting."""
        job = jobs.claim_job(conn, self.name, self.lease_s, self.max_attempts)
        if job is None:
            return None
        logger = log.bind(job=str(job.id), attempt=job.attempts)
        logger.info("export started", format=job.format, filters=job.filters)
        keeper = _LeaseKeeper(conn, job, self.lease_s)
        keeper.start()
        try:
            rows, size = self._write(job, keeper, stop or threading.Event())
            jobs.complete_job(conn, job, rows, size)
            logger.info("export complete", rows=rows, bytes=size, key=job.object_key)
        except LeaseLostError:
            logger.warning("export abandoned: another worker took it over")
        except _Stopped:
            self._unless_lost(jobs.release_job, conn, job)
            logger.info("export released for another worker: shutting down")
        except StoreUnavailableError as exc:
            # Nothing reliable can be recorded now; the lease runs out and the
            # job is tried again (one attempt spent).
            logger.warning("export interrupted: postgres unavailable", error=self._clean(exc))
            raise
        # Ours (a store's DestinationError, a ConfigError) and pydantic's say what
        # is wrong without credentials; anything else could quote anything.
        except (LeadflowError, ValidationError) as exc:
            self._unless_lost(jobs.fail_job, conn, job, self._clean(exc))
            logger.warning("export failed", error=self._clean(exc))
        except Exception as exc:
            message = f"internal error ({type(exc).__name__}); see the worker log"
            self._unless_lost(jobs.fail_job, conn, job, message)
            logger.error("export failed", error_type=type(exc).__name__, error=self._clean(exc))
        finally:
            keeper.done.set()
            keeper.join()
        return jobs.get_job(conn, job.id)

    @staticmethod
    def _unless_lost(record: Callable[..., None], *args: Any) -> None:
        # The job's outcome is now its new owner's to record.
        with contextlib.suppress(LeaseLostError):
            record(*args)

    def _write(
        self, job: ExportJob, keeper: _LeaseKeeper, stop: threading.Event
    ) -> tuple[int, int]:
        """Spool the job's file, then upload it; returns (rows, bytes of the gzip'd file)."""
        with tempfile.TemporaryFile(prefix="leadflow-export-") as spool:
            rows = self._spool(job, spool, keeper, stop)
            size = spool.tell()
            spool.seek(0)
            self._check(job, keeper, stop)
            destination = Destination(kind=job.store_kind, bucket=job.bucket)
            store = open_store(destination, self.settings, threads=4)
            try:
                store.upload_file(job.object_key, spool, "application/gzip")
            finally:
                store.close()
        return rows, size

    def _spool(
        self, job: ExportJob, spool: IO[bytes], keeper: _LeaseKeeper, stop: threading.Event
    ) -> int:
        return spool_export(
            self.settings,
            job.query(),
            spool,
            lambda: self._check(job, keeper, stop),
            clear_text=job.clear_text,
            chunk_rows=self.chunk_rows,
        )

    def _check(self, job: ExportJob, keeper: _LeaseKeeper, stop: threading.Event) -> None:
        if keeper.lost:
            raise LeaseLostError(f"export {job.id}: lease lost to another worker")
        if stop.is_set():
            raise _Stopped

    def _clean(self, exc: BaseException) -> str:
        return redact(str(exc), *self._secrets)


def poll_until_stopped(
    settings: Settings,
    stop: threading.Event,
    *,
    role: str,
    migrate: Callable[[Settings], object],
    run_once: Callable[[Connection, threading.Event], object | None],
    poll_s: float,
    unavailable: tuple[type[Exception], ...],
    clean: Callable[[BaseException], str],
) -> None:
    """Call ``run_once`` until ``stop`` is set, waiting ``poll_s`` whenever it found nothing
    (returned None); shared by the export worker and the scheduler, so both ride out a
    Postgres outage the same way.

    ``migrate`` runs once, before the first connection (named ``leadflow-<role>`` in
    ``pg_stat_activity``). An ``unavailable`` error is Postgres away: warned of, then
    waited out. Any other error is logged and waited out too, never raised: a worker
    thread inside the API has nobody to raise to (dying would leave every later job
    waiting without a word), and a supervisor restarting the process would only see it
    fail the same way at once; waiting keeps the log readable and the retry paced.
    """
    migrated = False
    application_name = f"leadflow-{role.replace(' ', '-')}"
    while not stop.is_set():
        try:
            if not migrated:
                migrate(settings)
                migrated = True
            with connect(settings, application_name=application_name) as conn:
                while not stop.is_set():
                    if run_once(conn, stop) is None:
                        stop.wait(poll_s)
        except unavailable as exc:
            log.warning(f"{role} waiting for postgres", error=clean(exc))
            stop.wait(_UNAVAILABLE_BACKOFF_S)
        except Exception as exc:
            log.error(f"{role} failed", error_type=type(exc).__name__, error=clean(exc))
            stop.wait(_UNAVAILABLE_BACKOFF_S)


def settings_secrets(settings: Settings) -> tuple[str, ...]:
    """Every credential an error message could quote, for ``redact``."""
    url = settings.database_url.get_secret_value()
    aws = settings.aws_secret_access_key
    azure = settings.azure_storage_connection_string.get_secret_value()
    azure_parts = (part.partition("=") for part in azure.split(";"))
    values = (
        url,
        urlparse(url).password,
        aws.get_secret_value() if aws else None,
        azure,
        *(value for key, _, value in azure_parts if key in ("AccountKey", "SharedAccessSignature")),
    )
    return tuple(v for v in values if v)


def spool_export(
    settings: Settings,
    query: ExportQuery,
    spool: IO[bytes],
    check: Callable[[], None],
    *,
    clear_text: bool,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Write ``query``'s file gzip'd to ``spool``, calling ``check`` after each chunk (it
    raises to stop); returns the rows written. Shared by export jobs and scheduled runs."""
    with (
        connect(settings, application_name="leadflow-export") as conn,
        # mtime 0: a re-run of the same data writes the same bytes. Level 6,
        # zlib's default: most of 9's ratio on JSON at a fraction of its time.
        gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=6, mtime=0) as zipped,
    ):
        stream = ExportStream(conn, query, chunk_rows, clear_text=clear_text)
        try:
            for chunk in stream:
                zipped.write(chunk)
                check()
        finally:
            stream.close()
        return stream.rows
