-- The analytics projection: per UTC day, how many events of each kind, their
-- durations, cost and revenue, so dashboards over months read a few thousand
-- rows instead of scanning millions of events. Runs with search_path set to
-- one generation schema of the analytics projection (projectors/generations.py).

-- entity_id is the source or recipient the step dealt with ('' when none)
-- and reason '' when there is none: key columns cannot be null.
-- numeric, not float: sums of exact decimals do not depend on the order the
-- events arrived in, so a rebuild adds up to exactly the live figures.
CREATE TABLE daily_event_counts (
    flow_id   text NOT NULL,
    day       date NOT NULL,
    step_id   text NOT NULL,
    type      text NOT NULL,
    outcome   text NOT NULL,
    entity_id text NOT NULL,
    reason    text NOT NULL,
    events    bigint NOT NULL,
    ms_total  bigint NOT NULL,
    ms_max    integer NOT NULL,
    cost      numeric NOT NULL,
    revenue   numeric NOT NULL,
    PRIMARY KEY (flow_id, day, step_id, type, outcome, entity_id, reason)
);

-- Which events are already counted: an event read twice (a step's input
-- replayed re-records its events under the same ids) must not count twice.
CREATE TABLE counted_events (
    id text PRIMARY KEY
);

CREATE TABLE projector_checkpoints (
    projector   text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, topic, partition)
);

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
