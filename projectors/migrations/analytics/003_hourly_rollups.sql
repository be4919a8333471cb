-- Issue #20 (seed 002): step performance, rejections and buyer behaviour per UTC hour, so a
-- range of any length reads a few rows per hour and a rebuild recomputes them exactly.
-- Every figure is a count or an integer sum keyed by the event's own hour: the same events
-- add up to the same rows in any order and any batching. Events counted before this
-- migration are not in these tables: `leadflow replay analytics` fills them.

-- Per hour, step, type and outcome. calls/wait_*: the events of a step that called a
-- service or buyer (enhancement.*, recipient.*; a capped lead is refused unsent, no call).
CREATE TABLE hourly_step_stats (
    flow_id    text NOT NULL,
    hour       timestamptz NOT NULL,
    step_id    text NOT NULL,
    type       text NOT NULL,
    outcome    text NOT NULL,
    events     bigint NOT NULL,
    ms_total   bigint NOT NULL,
    ms_max     integer NOT NULL,
    calls      bigint NOT NULL,
    wait_total bigint NOT NULL,
    wait_max   integer NOT NULL,
    -- what the events charged (an enhancement's cost is read from here)
    cost       numeric NOT NULL,
    PRIMARY KEY (flow_id, hour, step_id, type, outcome)
);

-- Duration histograms per hour and step, on fixed log buckets [lo, hi)
-- (projectors/histogram.py): exact below 32 ms, then 16 buckets per doubling, so a
-- percentile read back is at most 1/16 above the true value, never below. Buckets of
-- several hours (or steps) merge by adding counts, which sorted arrays of every
-- duration would also allow, but at a row per event instead of a few dozen per hour.
-- metric: 'ms' (a decision's duration) or 'wait_ms' (a call's response time).
CREATE TABLE hourly_durations (
    flow_id text NOT NULL,
    hour    timestamptz NOT NULL,
    step_id text NOT NULL,
    metric  text NOT NULL,
    lo      bigint NOT NULL,
    hi      bigint NOT NULL,
    events  bigint NOT NULL,
    PRIMARY KEY (flow_id, hour, step_id, metric, lo)
);

-- Refusals, failures and errors with a reason, per hour and the lead's source
-- (vars.source.id; '' when the snapshot names none).
CREATE TABLE hourly_reasons (
    flow_id   text NOT NULL,
    hour      timestamptz NOT NULL,
    source_id text NOT NULL,
    step_id   text NOT NULL,
    type      text NOT NULL,
    reason    text NOT NULL,
    events    bigint NOT NULL,
    PRIMARY KEY (flow_id, hour, source_id, step_id, type, reason)
);
