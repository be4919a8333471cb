-- The timeline projection: one row per event, the latest state of each lead,
-- and the projector's own position in every partition it reads.
-- Runs with search_path set to the configured schema (see projectors/store.py).

-- Every event exactly once, keyed by its deterministic id. Ids sort by
-- submission time, then lead, then position in the flow, so (lead_id, id)
-- is a lead's timeline in order.
CREATE TABLE events (
    id              text PRIMARY KEY,
    lead_id         text NOT NULL,
    flow_id         text NOT NULL,
    flow_version    integer NOT NULL,
    step_id         text NOT NULL,
    step_name       text,
    entity_id       text,
    type            text NOT NULL,
    -- text, not an enum or a CHECK: an event with an outcome a newer schema
    -- adds must not become a poison record that stops the projector.
    outcome         text NOT NULL,
    reason          text,
    ts              timestamptz NOT NULL,
    start_timestamp bigint NOT NULL,
    end_timestamp   bigint NOT NULL,
    ms              integer NOT NULL,
    wait_ms         integer NOT NULL,
    overhead_ms     integer NOT NULL,
    -- bigint: gaps in wall-clock time (a lead waiting out an outage) outgrow int4.
    lag_ms          bigint NOT NULL,
    total_ms        bigint NOT NULL,
    step_count      integer NOT NULL,
    cost            double precision,
    revenue         double precision,
    host            text NOT NULL,
    handler_version text NOT NULL,
    version         text NOT NULL,
    expires_at      timestamptz NOT NULL,
    -- The whole event as LeadConduit-style JSON (schemas.event_to_json_dict).
    snapshot        jsonb NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL
);

CREATE INDEX events_lead_id_id ON events (lead_id, id);
CREATE INDEX events_flow_id_ts ON events (flow_id, ts);
CREATE INDEX events_type ON events (type);
CREATE INDEX events_outcome ON events (outcome);

-- Each lead's latest state. Only ever moves forward: a row is updated only by
-- an event with a greater id than last_event_id, so replaying old events
-- (or reading topics out of step with each other) never regresses it.
CREATE TABLE leads (
    lead_id         text PRIMARY KEY,
    flow_id         text NOT NULL,
    status          text NOT NULL,               -- outcome of the latest event
    last_event_id   text NOT NULL,
    last_event_type text NOT NULL,
    last_step_id    text NOT NULL,
    cost            double precision,            -- totals once flow.completed is in
    revenue         double precision,
    submitted_at    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,        -- time of the latest event
    completed       boolean NOT NULL DEFAULT false
);

CREATE INDEX leads_flow_id_completed ON leads (flow_id) WHERE completed;

-- Where each projector resumes: the offset after the last record it wrote,
-- per partition, committed in the same transaction as the rows.
CREATE TABLE projector_checkpoints (
    projector   text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, topic, partition)
);

-- Records that are not leadflow events, kept as data (with their raw bytes)
-- instead of stopping the projector.
CREATE TABLE projector_rejects (
    projector       text NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    error           text NOT NULL,
    raw             bytea,
    key             bytea,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, kafka_topic, kafka_partition, kafka_offset)
);
