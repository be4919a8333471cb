"""The export scheduler: queues each schedule's due runs, runs them, retries failures.

Any number of schedulers may run (one per supervisor, say): each scheduled time is
queued once (``schedules.queue_due_runs``) and each run is taken by one scheduler at a
time under a lease, so a file is written once per scheduled time; a scheduler killed
mid-run leaves its run to be taken again when the lease runs out, and the retry
writes the same key (one per schedule and time), replacing the partial attempt.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import unquote, urlparse

import structlog
from pydantic import ValidationError

from engine.destinations import Destination
from engine.errors import LeadflowError
from engine.export_schedules import LocalOutput, ObjectOutput
from engine.flows import Flow
from engine.objects.contract import directory
from engine.objects.destination import open_store
from engine.objects.errors import redact
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.postgres import migrate_state
from projectors.errors import StoreUnavailableError
from projectors.exports import schedules, task_runs
from projectors.exports.errors import LeaseLostError, OutputError
from projectors.exports.formats import FORMATS
from projectors.exports.runner import poll_until_stopped, settings_secrets, spool_export
from projectors.exports.schedules import Schedule, TaskRun
from projectors.store import Connection

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

DEFAULT_LEASE_S = 120.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """How long after failed attempt ``attempt`` (1, 2, …) the next one waits: doubling."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


def file_name(schedule: Schedule, run: TaskRun) -> str:
    """One name per schedule and scheduled time, so a retry replaces its own file only."""
    stamp = run.scheduled_for.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
    extension = FORMATS[schedule.export_query().format].extension
    return f"{schedule.id}/{stamp}.{extension}.gz"


class ExportScheduler:
    """Queues and runs scheduled exports, one run at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = 5.0,
        retry_base_s: float = 30.0,
        retry_cap_s: float = 3600.0,
        name: str | None = None,
        flows: Callable[[], list[Flow]] | None = None,
        every_flow: bool = False,
    ) -> None:
        """``flows``, if given, says which flows' ``exports:`` to keep in step with before
        each round (the flow file's, or the registry's: ``every_flow``, so the schedules of
        a flow deleted from it stop too)."""
        self.settings = settings
        self.clock = clock
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_native_id()}"
        self.flows = flows
        self.every_flow = every_flow
        self._secrets = settings_secrets(settings)

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, riding out Postgres outages with a backoff."""
        log.info("export scheduler started", worker=self.name, poll_s=self.poll_s)
        poll_until_stopped(
            self.settings,
            stop,
            role="export scheduler",
            migrate=migrate_state,
            run_once=self.run_once,
            poll_s=self.poll_s,
            unavailable=(StoreUnavailableError, StateUnavailableError),
            clean=self._clean,
        )
        log.info("export scheduler stopped", worker=self.name)

    def run_once(self, conn: Connection, stop: threading.Event | None = None) -> TaskRun | None:
        """Queue what is due, then run one run whose time has come; the run as recorded
        afterwards, or None if none was waiting."""
        if self.flows is not None:
            schedules.sync_flow_schedules(
                conn, self.flows(), self.clock(), every_flow=self.every_flow
            )
        task_runs.queue_due_runs(conn, self.clock())
        claimed = task_runs.claim_run(conn, self.name, self.clock(), self.lease_s)
        if claimed is None:
            return None
        run, schedule = claimed
        logger = log.bind(run=run.id, schedule=schedule.id, attempt=run.attempts)
        logger.info("scheduled export started", scheduled_for=run.scheduled_for.isoformat())
        try:
            location, rows, size = self._write(conn, run, schedule, stop or threading.Event())
            done = task_runs.complete_run(conn, run, schedule, self.clock(), location, rows, size)
            logger.info("scheduled export complete", rows=rows, bytes=size, location=location)
        except LeaseLostError:
            logger.warning("scheduled export abandoned: another scheduler took it over")
        except _Stopped:
            with contextlib.suppress(LeaseLostError):  # then it is its new owner's
                task_runs.release_run(conn, run, schedule, self.clock())
            logger.info("scheduled export released: shutting down")
        except (StoreUnavailableError, StateUnavailableError):
            raise  # nothing reliable can be recorded; the lease runs out, the run is retried
        # Ours (a store's DestinationError, OutputError) and pydantic's say what is wrong
        # without credentials; anything else could quote anything.
        except (LeadflowError, ValidationError, OSError) as exc:
            return self._failed(conn, run, schedule, self._clean(exc))
        except Exception as exc:
            logger.error("scheduled export failed", error_type=type(exc).__name__,
                         error=self._clean(exc))  # fmt: skip
            message = f"internal error ({type(exc).__name__}); see the scheduler log"
            return self._failed(conn, run, schedule, message)
        else:
            # After the run is recorded: a failure here is no failure of the run.
            self._delete_old_files(conn, schedule)
            return done
        return None

    def _failed(self, conn: Connection, run: TaskRun, schedule: Schedule, message: str) -> TaskRun:
        wait = backoff_s(run.attempts, self.retry_base_s, self.retry_cap_s)
        recorded = task_runs.fail_run(conn, run, schedule, self.clock(), message, wait)
        log.warning("scheduled export attempt failed", run=run.id, attempt=run.attempts,
                    status=recorded.status, error=message)  # fmt: skip
        return recorded

    def _write(
        self, conn: Connection, run: TaskRun, schedule: Schedule, stop: threading.Event
    ) -> tuple[str, int, int]:
        """Spool the run's file, then put it where the schedule says; (location, rows, bytes)."""
        renewed = [self.clock()]

        def check() -> None:
            if stop.is_set():
                raise _Stopped
            now = self.clock()
            if (now - renewed[0]).total_seconds() >= self.lease_s / 3:
                task_runs.renew_run(conn, run, now, self.lease_s)
                renewed[0] = now

        output = schedule.output()
        name = file_name(schedule, run)
        # Checked before the export is spooled: a misconfiguration fails in a moment.
        target = self._local_target(output, name) if isinstance(output, LocalOutput) else None
        query = schedule.export_query()
        with tempfile.TemporaryFile(prefix="leadflow-scheduled-export-") as spool:
            rows = spool_export(self.settings, query, spool, check, clear_text=schedule.clear_text)
            size = spool.tell()
            spool.seek(0)
            check()
            if target is not None:
                return self._write_local(target, spool), rows, size
            assert isinstance(output, ObjectOutput)  # not local, so an object store
            return self._upload(output, name, spool), rows, size

    def _delete_old_files(self, conn: Connection, schedule: Schedule) -> None:
        """Delete the files past the schedule's ``keep_files``; each recorded after it is
        gone, so a crash between leaves it to be deleted (again: a no-op) next time."""
        for old in task_runs.files_beyond_kept(conn, schedule):
            assert old.output_location is not None  # files_beyond_kept selects files only
            try:
                self._delete(old.output_location)
            except (LeadflowError, OSError) as exc:
                log.warning("old scheduled export not deleted", location=old.output_location,
                            error=self._clean(exc))  # fmt: skip
                continue
            task_runs.record_file_deleted(conn, old, schedule, self.clock())

    def _delete(self, location: str) -> None:
        scheme, _, rest = location.partition("://")
        if scheme == "file":
            Path(unquote(urlparse(location).path)).unlink(missing_ok=True)
            return
        bucket, _, key = rest.partition("/")
        kind: Literal["s3", "azure_blob"] = "s3" if scheme == "s3" else "azure_blob"
        store = open_store(Destination(kind=kind, bucket=bucket), self.settings, threads=1)
        try:
            store.delete(key)
        finally:
            store.close()

    def _upload(self, output: ObjectOutput, name: str, spool: BinaryIO) -> str:
        key = f"{directory(output.prefix)}{name}"
        store = open_store(Destination(kind=output.kind, bucket=output.bucket), self.settings,
                           threads=1)  # fmt: skip
        try:
            store.upload_file(key, spool, "application/gzip")
        finally:
            store.close()
        return f"{output.kind}://{output.bucket}/{key}"

    def _local_target(self, output: LocalOutput, name: str) -> Path:
        root = self.settings.export_local_dir
        if root is None:
            raise OutputError("a local destination needs LEADFLOW_EXPORT_LOCAL_DIR to be set")
        return Path(root, output.path, name)

    def _write_local(self, target: Path, spool: BinaryIO) -> str:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside, then renamed: a reader never sees half a file, and a retry
        # replaces the whole of an earlier attempt's.
        partial = target.with_name(f".{target.name}.partial")
        with partial.open("wb") as out:
            while chunk := spool.read(1024 * 1024):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)
        return target.resolve().as_uri()

    def _clean(self, exc: BaseException) -> str:
        return redact(str(exc), *self._secrets)


class _Stopped(Exception):
    """The scheduler is shutting down in the middle of a run."""
