"""Task runs: each scheduled time of an export schedule, queued, taken, retried, finished.

A run's row is its claim on a scheduled time: ``UNIQUE (schedule_id, scheduled_for)``
lets one insert succeed however many schedulers race, so each scheduled time is run
once. Runs are then taken like export jobs (``FOR UPDATE SKIP LOCKED`` and a lease); a
failed attempt is queued again after a backoff until ``max_attempts``. Every time here
is the caller's (a scheduler's clock), never ``now()``, so tests drive it with a fake one.
Each state change writes its ``task_run.*``/``storage.*`` system event in the same
transaction (``projectors.exports.system_events``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import dict_row

from engine.ids import new_lead_id
from projectors.exports.errors import LeaseLostError
from projectors.exports.schedules import (
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    RunStatus,
    Schedule,
    TaskRun,
    epoch_ms,
    latest_due,
    run_event,
    schedule_of,
)
from projectors.exports.system_events import emit_system_event
from projectors.store import Connection, translate_errors


def list_runs(
    conn: Connection,
    schedule_id: str | None = None,
    status: RunStatus | None = None,
    limit: int = 100,
) -> list[TaskRun]:
    """The newest runs first (by scheduled time), all or one schedule's, all or in ``status``."""
    return _select_runs(
        conn,
        "WHERE (%(schedule)s::text IS NULL OR schedule_id = %(schedule)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " ORDER BY scheduled_for DESC, id DESC LIMIT %(limit)s",
        {"schedule": schedule_id, "status": status, "limit": limit},
    )


def _select_runs(conn: Connection, where: LiteralString, params: Params) -> list[TaskRun]:
    """The runs ``where`` (a WHERE clause and what follows it) selects."""
    query = sql.SQL("SELECT {} FROM engine_task_runs {}").format(RUN_COLUMNS, sql.SQL(where))
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        return [TaskRun(**row) for row in cur.execute(query, params).fetchall()]


def queue_due_runs(conn: Connection, now: datetime) -> list[TaskRun]:
    """Queue a run for each enabled schedule that is due at ``now``; the runs this call
    queued (none for a time another scheduler queued first)."""
    queued = []
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # SKIP LOCKED: a schedule another scheduler is queueing is its business now.
        rows = cur.execute(
            sql.SQL(
                "SELECT {} FROM engine_export_schedules WHERE enabled FOR UPDATE SKIP LOCKED"
            ).format(SCHEDULE_COLUMNS)
        ).fetchall()
        for schedule in (Schedule(**row) for row in rows):
            due = latest_due(schedule.cron, schedule.last_scheduled_for, now)
            if due is None:
                continue
            # The unique (schedule_id, scheduled_for) is the guarantee; the lock above
            # only spares the loser the work.
            row = cur.execute(
                sql.SQL(
                    "INSERT INTO engine_task_runs (id, schedule_id, scheduled_for, status,"
                    " next_attempt_at) VALUES (%s, %s, %s, 'queued', %s)"
                    " ON CONFLICT (schedule_id, scheduled_for) DO NOTHING RETURNING {}"
                ).format(RUN_COLUMNS),
                (new_lead_id(epoch_ms(due)), schedule.id, due, due),
            ).fetchone()
            cur.execute(
                "UPDATE engine_export_schedules SET last_scheduled_for = %s"
                " WHERE id = %s AND last_scheduled_for < %s",
                (due, schedule.id, due),
            )
            if row is not None:
                run = TaskRun(**row)
                run_event(cur, "queued", run, schedule, now)
                queued.append(run)
    return queued


_CLAIMABLE = sql.SQL("""
SELECT {} FROM engine_task_runs
WHERE (status = 'queued' AND next_attempt_at <= %(now)s)
   OR (status = 'running' AND lease_expires_at < %(now)s)
ORDER BY next_attempt_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED
""").format(RUN_COLUMNS)

_START = sql.SQL("""
UPDATE engine_task_runs SET status = 'running', attempts = attempts + 1, worker = %(worker)s,
    started_at = %(now)s, finished_at = NULL,
    lease_expires_at = %(now)s + make_interval(secs => %(lease_s)s)
WHERE id = %(id)s
RETURNING {}
""").format(RUN_COLUMNS)


def claim_run(
    conn: Connection, worker: str, now: datetime, lease_s: float
) -> tuple[TaskRun, Schedule] | None:
    """The oldest run whose time has come (or whose scheduler died: lease expired), now
    ``running`` under a lease for ``worker``; None when there is none."""
    while True:
        with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            found = cur.execute(_CLAIMABLE, {"now": now}).fetchone()
            if found is None:
                return None
            run = TaskRun(**found)
            schedule = schedule_of(cur, run)
            if run.status == "running" and run.attempts >= schedule.max_attempts:
                message = (
                    f"gave up after {run.attempts} attempts: the scheduler stopped (crashed"
                    " or was killed) before finishing the last one"
                )
                _finish_failed(cur, run, schedule, now, message)
                continue
            row = cur.execute(
                _START, {"worker": worker, "now": now, "lease_s": lease_s, "id": run.id}
            ).fetchone()
            assert row is not None  # the row is locked by this transaction
            started = TaskRun(**row)
            run_event(cur, "running", started, schedule, now)
            return started, schedule


def _owned(cur: Any, run: TaskRun, update: str, params: dict[str, Any]) -> TaskRun:
    """Apply ``update`` if ``run`` is still this attempt's; ``LeaseLostError`` if not."""
    row = cur.execute(
        sql.SQL("{} WHERE id = %(id)s AND status = 'running' AND attempts = %(attempts)s"
                " AND worker IS NOT DISTINCT FROM %(worker)s RETURNING {}").format(
            sql.SQL(update), RUN_COLUMNS
        ),
        params | {"id": run.id, "attempts": run.attempts, "worker": run.worker},
    ).fetchone()  # fmt: skip
    if row is None:
        raise LeaseLostError(f"task run {run.id}: taken over by another scheduler")
    return TaskRun(**row)


def renew_run(conn: Connection, run: TaskRun, now: datetime, lease_s: float) -> None:
    """Extend the lease; ``LeaseLostError`` if another scheduler holds the run now."""
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        _owned(
            cur,
            run,
            "UPDATE engine_task_runs SET"
            " lease_expires_at = %(now)s + make_interval(secs => %(lease_s)s)",
            {"now": now, "lease_s": lease_s},
        )


def complete_run(
    conn: Connection,
    run: TaskRun,
    schedule: Schedule,
    now: datetime,
    location: str,
    rows: int,
    size: int,
) -> TaskRun:
    """Record success: ``task_run.completed`` and ``storage.created`` for its file."""
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        done = _owned(
            cur,
            run,
            "UPDATE engine_task_runs SET status = 'completed', finished_at = %(now)s,"
            " lease_expires_at = NULL, error = NULL, output_location = %(location)s,"
            " row_count = %(rows)s, byte_count = %(size)s",
            {"now": now, "location": location, "rows": rows, "size": size},
        )
        run_event(cur, "completed", done, schedule, now)
        stored = {
            "location": location,
            "bytes": size,
            "rows": rows,
            "content_type": "application/gzip",
            "task_run_id": done.id,
            "schedule_id": schedule.id,
        }
        emit_system_event(cur, "storage.created", location, stored, now, None, schedule.flow_id)
    return done


def fail_run(
    conn: Connection,
    run: TaskRun,
    schedule: Schedule,
    now: datetime,
    message: str,
    backoff_s: float,
) -> TaskRun:
    """Record a failed attempt: queued again ``backoff_s`` from now (``task_run.queued``,
    the error as its reason) while attempts remain, else ``failed`` (``task_run.failed``).
    ``message`` is shown to users, so it must hold no secret."""
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if run.attempts >= schedule.max_attempts:
            return _finish_failed(cur, run, schedule, now, message)
        again = _owned(
            cur,
            run,
            "UPDATE engine_task_runs SET status = 'queued', lease_expires_at = NULL,"
            " next_attempt_at = %(now)s + make_interval(secs => %(backoff_s)s),"
            " error = %(error)s",
            {"now": now, "backoff_s": backoff_s, "error": message},
        )
        reason = f"retry after attempt {run.attempts}: {message}"
        run_event(cur, "queued", again, schedule, now, reason)
    return again


def _finish_failed(
    cur: Any, run: TaskRun, schedule: Schedule, now: datetime, message: str
) -> TaskRun:
    done = _owned(
        cur,
        run,
        "UPDATE engine_task_runs SET status = 'failed', finished_at = %(now)s,"
        " lease_expires_at = NULL, error = %(error)s",
        {"now": now, "error": message},
    )
    run_event(cur, "failed", done, schedule, now, message)
    return done


def release_run(conn: Connection, run: TaskRun, schedule: Schedule, now: datetime) -> None:
    """Give the run back now (this scheduler is stopping: not a failed attempt)."""
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        again = _owned(
            cur,
            run,
            "UPDATE engine_task_runs SET status = 'queued', lease_expires_at = NULL,"
            " attempts = attempts - 1, next_attempt_at = %(now)s",
            {"now": now},
        )
        run_event(cur, "queued", again, schedule, now, "the scheduler running it stopped")


def files_beyond_kept(conn: Connection, schedule: Schedule) -> list[TaskRun]:
    """The completed runs whose files are past the schedule's ``keep_files`` newest and
    not deleted yet (none without ``keep_files``)."""
    if schedule.keep_files is None:
        return []
    return _select_runs(
        conn,
        # Deleted files are always past the newest kept (or, had keep_files grown
        # since, leaving them out keeps one more file, never one fewer).
        "WHERE schedule_id = %s"
        " AND status = 'completed' AND output_location IS NOT NULL"
        " AND output_deleted_at IS NULL"
        " ORDER BY scheduled_for DESC OFFSET %s",
        (schedule.id, schedule.keep_files),
    )


def record_file_deleted(conn: Connection, run: TaskRun, schedule: Schedule, now: datetime) -> None:
    """Record that ``run``'s file is gone (``storage.deleted``), once."""
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL(
                "UPDATE engine_task_runs SET output_deleted_at = %s"
                " WHERE id = %s AND output_deleted_at IS NULL RETURNING {}"
            ).format(RUN_COLUMNS),
            (now, run.id),
        ).fetchone()
        if row is None:
            return  # another scheduler recorded it first
        deleted = {
            "location": run.output_location,
            "task_run_id": run.id,
            "schedule_id": schedule.id,
            "reason": f"keep_files {schedule.keep_files}",
        }
        subject = run.output_location or run.id
        emit_system_event(cur, "storage.deleted", subject, deleted, now, None, schedule.flow_id)
