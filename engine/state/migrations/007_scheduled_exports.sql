-- Scheduled exports (projectors/exports/schedules.py, task_runs.py): an export job that
-- runs on a cron schedule, and each of its runs as a task run. The unique (schedule_id,
-- scheduled_for) is what makes a scheduled time run once however many schedulers race
-- for it: the insert of the run is the claim on that time, and only one insert succeeds.
CREATE TABLE engine_export_schedules (
    id                 text PRIMARY KEY,          -- a ULID (engine.ids)
    cron               text NOT NULL,             -- five fields, UTC
    query              jsonb NOT NULL,            -- the export's filters and format (ExportQuery)
    destination        jsonb NOT NULL,            -- {kind: s3|azure_blob, bucket, prefix} | {kind: local, path}
    clear_text         boolean NOT NULL,          -- its creator held pii:read
    max_attempts       integer NOT NULL CHECK (max_attempts >= 1),
    -- Keep this many of the newest files, deleting older ones (storage.deleted); NULL: all.
    keep_files         integer CHECK (keep_files >= 1),
    created_by         text,
    created_at         timestamptz NOT NULL,
    enabled            boolean NOT NULL DEFAULT true,
    -- The latest scheduled time a run was queued for: the next is the cron's first after it.
    last_scheduled_for timestamptz NOT NULL
);

CREATE TABLE engine_task_runs (
    id              text PRIMARY KEY,             -- a ULID (engine.ids)
    schedule_id     text NOT NULL REFERENCES engine_export_schedules ON DELETE CASCADE,
    scheduled_for   timestamptz NOT NULL,
    -- text with a CHECK, not an enum: a status added later is one ALTER.
    status          text NOT NULL
                    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'canceled')),
    attempts        integer NOT NULL DEFAULT 0,
    -- When a queued run may start: its scheduled time, or after a failure the backoff's end.
    next_attempt_at timestamptz NOT NULL,
    -- A running run whose scheduler died is taken again once this passes.
    lease_expires_at timestamptz,
    worker          text,
    started_at      timestamptz,
    finished_at     timestamptz,
    error           text,                         -- the last attempt's, credential-free
    output_location text,                         -- s3://bucket/key, azure_blob://…, file:///…
    output_deleted_at timestamptz,                -- the file deleted (keep_files)
    row_count       bigint,
    byte_count      bigint,
    UNIQUE (schedule_id, scheduled_for)
);

-- What a scheduler looks for: runs waiting for their time, or running under a lease.
CREATE INDEX engine_task_runs_claimable ON engine_task_runs (next_attempt_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX engine_task_runs_recent ON engine_task_runs (scheduled_for DESC, id DESC);
