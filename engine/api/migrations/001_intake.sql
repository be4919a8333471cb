-- HTTP intake: idempotency keys and pings. Runs with search_path set to the
-- configured schema (engine/intake/store.py).

-- One row per idempotency key a source sent: the lead it became, whether that
-- lead reached the intake topic, and the answer once one was given, so a
-- retried POST is the same lead and gets the same answer.
CREATE TABLE engine_intake_requests (
    flow_id         text NOT NULL,
    source_id       text NOT NULL,
    idempotency_key text NOT NULL,
    lead_id         text NOT NULL,
    body_sha256     bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    answer_status   integer,
    answer          jsonb,
    PRIMARY KEY (flow_id, source_id, idempotency_key)
);
CREATE INDEX engine_intake_requests_created ON engine_intake_requests (created_at);

-- A ping's offer, for the post that follows it: the price holds until
-- expires_at, for one lead (lead_id is set by the first post that uses it).
CREATE TABLE engine_intake_pings (
    ping_id    text PRIMARY KEY,
    flow_id    text NOT NULL,
    source_id  text NOT NULL,
    price      double precision,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    lead_id    text
);
