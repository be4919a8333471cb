-- Export jobs: a requested export, its progress and its file in object storage,
-- and every download of that file. Runs with search_path set to the
-- configured schema; versions are tracked in export_migrations.

CREATE TABLE export_jobs (
    id               uuid PRIMARY KEY,
    -- text with a CHECK, not an enum: a status added later is one ALTER.
    status           text NOT NULL
                     CHECK (status IN ('created', 'processing', 'complete', 'error')),
    format           text NOT NULL,
    filters          jsonb NOT NULL,
    requested_by     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    -- Claims so far; a job whose worker keeps dying is given up after a few.
    attempts         integer NOT NULL DEFAULT 0,
    worker           text,
    -- The claim's owner and how long it holds: only the holder of the current
    -- token may extend the lease or record the outcome, so a worker that was
    -- presumed dead and comes back cannot overwrite its successor's result.
    lease_token      uuid,
    lease_expires_at timestamptz,
    -- Where the file is: kept per job, so changing the export settings later
    -- does not orphan files already written.
    store_kind       text NOT NULL,
    bucket           text NOT NULL,
    object_key       text NOT NULL,
    row_count        bigint,
    byte_count       bigint,
    error            text
);

-- What a worker looks for: jobs waiting, or processing under a lease that may have expired.
CREATE INDEX export_jobs_claimable ON export_jobs (created_at)
    WHERE status IN ('created', 'processing');
CREATE INDEX export_jobs_created_at ON export_jobs (created_at DESC, id DESC);

CREATE TABLE export_downloads (
    job_id         uuid NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    downloaded_at  timestamptz NOT NULL DEFAULT now(),
    -- The X-Leadflow-User header when given (there is no authentication yet,
    -- so it is a claim, not an identity), else the client's address.
    downloaded_by  text NOT NULL,
    client_address text
);

CREATE INDEX export_downloads_job_id ON export_downloads (job_id, downloaded_at);
