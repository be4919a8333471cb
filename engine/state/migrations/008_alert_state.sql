-- Alert evaluation (engine/runtime/alerting): one evaluator per flow reads every partition of
-- the flow's event topics and keeps, in one Postgres transaction per batch, where it is in
-- each partition, each rule's window and alert state, and the actions a change of state
-- owes (webhook calls, a source's cap lowered). A kill -9 before the commit re-reads the
-- batch and decides again from the state before it; after it, nothing is decided twice.
CREATE TABLE engine_alert_positions (
    flow_id     text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_id, topic, partition)
);

CREATE TABLE engine_alert_windows (
    flow_id    text NOT NULL,
    rule_id    text NOT NULL,
    subject    text NOT NULL,       -- 'flow', or the step the rule judged
    samples    jsonb NOT NULL,      -- the window: engine.alerts.windows.SlidingWindow.to_json
    alert      jsonb NOT NULL,      -- engine.alerts.hysteresis.AlertState.to_json
    firing     boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_id, rule_id, subject)
);

-- Actions owed by an alert's change of state, done after the commit by a runner beside the
-- evaluator (never in its way): retried with backoff until done or out of attempts.
CREATE TABLE engine_alert_actions (
    id              text PRIMARY KEY,
    flow_id         text NOT NULL,
    alert_id        text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('webhook', 'lower_source_cap')),
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);
CREATE INDEX engine_alert_actions_due ON engine_alert_actions (flow_id, next_attempt_at)
    WHERE status = 'pending';
