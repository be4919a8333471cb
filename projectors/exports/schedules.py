"""Export schedules in Postgres: what a schedule is, when it is due, and the schedules a
flow file declares kept as the flow says. Their runs are ``projectors.exports.task_runs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cronsim import CronSim
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from engine.export_schedules import (
    Cron,
    KeepFiles,
    LocalOutput,
    MaxAttempts,
    ObjectOutput,
    Output,
)
from engine.flows import Flow
from engine.ids import new_lead_id
from projectors.exports.errors import UnknownScheduleError
from projectors.exports.system_events import emit_system_event
from projectors.params import iso_utc, iso_utc_or_none
from projectors.selection import ExportQuery
from projectors.store import Connection, translate_errors

RunStatus = Literal["queued", "running", "completed", "failed", "canceled"]

# -- what a schedule is -------------------------------------------------------------------


def latest_due(cron: str, after: datetime, now: datetime) -> datetime | None:
    """The latest time of ``cron`` in ``(after, now]``, or None if none is.

    Only the latest: a scheduler that was down for a day runs the export once
    on its return, not once per missed time (each run exports what its filters
    select then, so the missed runs would write the same file over and over).
    """
    # cronsim's reverse iteration starts strictly before its start: one minute past
    # ``now``'s minute includes that minute itself (cron times are whole minutes).
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    previous: datetime = next(CronSim(cron, start.astimezone(UTC), reverse=True))
    return previous if after < previous <= now else None


class ScheduleRequest(BaseModel):
    """A new schedule, as ``POST /export-schedules`` takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cron: Cron
    query: ExportQuery = ExportQuery()
    destination: Output
    max_attempts: MaxAttempts = 3
    keep_files: KeepFiles = None


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    cron: str
    query: dict[str, Any]
    destination: dict[str, Any]
    clear_text: bool
    max_attempts: int
    keep_files: int | None
    created_by: str | None
    created_at: datetime
    enabled: bool
    last_scheduled_for: datetime

    @property
    def flow_id(self) -> str | None:
        flow = self.query.get("flow_id")
        return str(flow) if flow is not None else None

    def export_query(self) -> ExportQuery:
        return ExportQuery.model_validate(self.query)

    def output(self) -> ObjectOutput | LocalOutput:
        if self.destination["kind"] == "local":
            return LocalOutput.model_validate(self.destination)
        return ObjectOutput.model_validate(self.destination)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cron": self.cron,
            "query": self.query,
            "destination": self.destination,
            "clear_text": self.clear_text,
            "max_attempts": self.max_attempts,
            "keep_files": self.keep_files,
            "created_by": self.created_by,
            "created_at": iso_utc(self.created_at),
            "enabled": self.enabled,
            "last_scheduled_for": iso_utc(self.last_scheduled_for),
        }


@dataclass(frozen=True, slots=True)
class TaskRun:
    id: str
    schedule_id: str
    scheduled_for: datetime
    status: RunStatus
    attempts: int
    next_attempt_at: datetime
    lease_expires_at: datetime | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    output_location: str | None
    output_deleted_at: datetime | None
    row_count: int | None
    byte_count: int | None

    def as_json(self) -> dict[str, Any]:
        """The run as the API and its system events show it (the lease stays private)."""
        return {
            "id": self.id,
            "schedule_id": self.schedule_id,
            "scheduled_for": iso_utc(self.scheduled_for),
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso_utc(self.next_attempt_at) if self.status == "queued" else None,
            "started_at": iso_utc_or_none(self.started_at),
            "finished_at": iso_utc_or_none(self.finished_at),
            "error": self.error,
            "output_location": self.output_location,
            "output_deleted_at": iso_utc_or_none(self.output_deleted_at),
            "rows": self.row_count,
            "bytes": self.byte_count,
        }


SCHEDULE_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, Schedule.__dataclass_fields__))
RUN_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, TaskRun.__dataclass_fields__))


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


# -- schedules ----------------------------------------------------------------------------


def create_schedule(
    conn: Connection,
    request: ScheduleRequest,
    created_by: str | None,
    now: datetime,
    *,
    clear_text: bool,
) -> Schedule:
    """A new enabled schedule; its first run is the cron's first time after ``now``."""
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL(
                "INSERT INTO engine_export_schedules (id, cron, query, destination, clear_text,"
                " max_attempts, keep_files, created_by, created_at, last_scheduled_for)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {}"
            ).format(SCHEDULE_COLUMNS),
            (
                new_lead_id(epoch_ms(now)),
                request.cron,
                Jsonb(request.query.filters() | {"format": request.query.format}),
                Jsonb(request.destination.model_dump()),
                clear_text,
                request.max_attempts,
                request.keep_files,
                created_by,
                now,
                now,
            ),
        ).fetchone()
    assert row is not None  # INSERT … RETURNING always returns the row
    return Schedule(**row)


def get_schedule(conn: Connection, schedule_id: str) -> Schedule:
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL("SELECT {} FROM engine_export_schedules WHERE id = %s").format(
                SCHEDULE_COLUMNS
            ),
            (schedule_id,),
        ).fetchone()
    if row is None:
        raise UnknownScheduleError(f"Unknown export schedule: {schedule_id}")
    return Schedule(**row)


def list_schedules(conn: Connection) -> list[Schedule]:
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            sql.SQL("SELECT {} FROM engine_export_schedules ORDER BY created_at, id").format(
                SCHEDULE_COLUMNS
            )
        ).fetchall()
    return [Schedule(**row) for row in rows]


def disable_schedule(conn: Connection, schedule_id: str, now: datetime) -> None:
    """No more runs: its runs waiting are canceled (``task_run.canceled``); a run under way
    finishes; the runs so far stay listed."""
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE engine_export_schedules SET enabled = false WHERE id = %s", (schedule_id,)
        )
        if cur.rowcount != 1:
            raise UnknownScheduleError(f"Unknown export schedule: {schedule_id}")
        _cancel_waiting(cur, [schedule_id], now, "the schedule was disabled")


def _cancel_waiting(cur: Any, schedule_ids: list[str], now: datetime, reason: str) -> None:
    """Cancel the queued runs of ``schedule_ids`` (just disabled), each with its event."""
    rows = cur.execute(
        sql.SQL(
            "UPDATE engine_task_runs SET status = 'canceled', finished_at = %s"
            " WHERE schedule_id = ANY(%s) AND status = 'queued' RETURNING {}"
        ).format(RUN_COLUMNS),
        (now, schedule_ids),
    ).fetchall()
    for run in (TaskRun(**row) for row in rows):
        run_event(cur, "canceled", run, schedule_of(cur, run), now, reason)


FLOW_FILE = "flow file"  # created_by of the schedules a flow file declares


def flow_schedule_id(flow_id: str, export_id: str) -> str:
    """A flow file's schedule's id: the same at every sync, so its runs carry on."""
    return f"flow.{flow_id}.{export_id}"


def sync_flow_schedules(
    conn: Connection, flows: list[Flow], now: datetime, *, every_flow: bool
) -> None:
    """Make the schedules of ``flows``' ``exports:`` what the flows say: new ones created
    (their first run is the cron's first time after ``now``), changed ones updated (their
    runs so far stay; the next follows the new cron), ones no longer declared disabled.
    With ``every_flow`` (the registry's whole list), those of flows not in ``flows`` too."""
    declared: list[str] = []
    with translate_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        for flow in flows:
            for export in flow.exports:
                query = ExportQuery(flow_id=flow.id, **export.filters.model_dump())
                schedule_id = flow_schedule_id(flow.id, export.id)
                declared.append(schedule_id)
                cur.execute(
                    "INSERT INTO engine_export_schedules AS s (id, cron, query, destination,"
                    " clear_text, max_attempts, keep_files, created_by, created_at,"
                    " last_scheduled_for) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET cron = excluded.cron,"
                    " query = excluded.query, destination = excluded.destination,"
                    " clear_text = excluded.clear_text, max_attempts = excluded.max_attempts,"
                    " keep_files = excluded.keep_files, enabled = true"
                    # Unchanged (every round, as a rule): no row version written.
                    " WHERE (s.cron, s.query, s.destination, s.clear_text, s.max_attempts,"
                    " s.keep_files, s.enabled) IS DISTINCT FROM (excluded.cron, excluded.query,"
                    " excluded.destination, excluded.clear_text, excluded.max_attempts,"
                    " excluded.keep_files, true)",
                    (
                        schedule_id,
                        export.cron,
                        Jsonb(query.filters() | {"format": query.format}),
                        Jsonb(export.destination.model_dump()),
                        export.clear_text,
                        export.max_attempts,
                        export.keep_files,
                        FLOW_FILE,
                        now,
                        now,
                    ),
                )
        # every_flow: a flow's schedules whatever its flow; else only the given flows'.
        stopped = cur.execute(
            "UPDATE engine_export_schedules SET enabled = false"
            " WHERE created_by = %(origin)s AND enabled AND NOT id = ANY(%(declared)s)"
            " AND (%(every)s OR query ->> 'flow_id' = ANY(%(flows)s)) RETURNING id",
            {
                "origin": FLOW_FILE,
                "declared": declared,
                "every": every_flow,
                "flows": [f.id for f in flows],
            },
        ).fetchall()
        if stopped:
            reason = "the export was removed from its flow"
            _cancel_waiting(cur, [row["id"] for row in stopped], now, reason)


def run_event(cur: Any, kind: str, run: TaskRun, schedule: Schedule, at: datetime,
              reason: str | None = None) -> None:  # fmt: skip
    """Write ``task_run.KIND`` about ``run`` (with its schedule) in ``cur``'s transaction."""
    data = run.as_json() | {"schedule": schedule.as_json()}
    emit_system_event(cur, f"task_run.{kind}", run.id, data, at, reason, schedule.flow_id)


def schedule_of(cur: Any, run: TaskRun) -> Schedule:
    row = cur.execute(
        sql.SQL("SELECT {} FROM engine_export_schedules WHERE id = %s").format(SCHEDULE_COLUMNS),
        (run.schedule_id,),
    ).fetchone()
    assert row is not None  # the foreign key cascades deletes
    return Schedule(**row)
