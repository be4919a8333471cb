-- Issue #20 (seed 002): what a lead's events add up to, for the questions about leads
-- rather than events (enhancement value, source performance, buyers' feedback quality).
-- A lead's events arrive on several topics, in any order across them (and in another
-- order in a rebuild), so each column is merged by an order-free rule: OR for flags,
-- sums for money (each event counted once, analytics' counted_events), LEAST for
-- times, and values every event carries alike (source, submission time).

CREATE TABLE lead_facts (
    flow_id      text NOT NULL,
    lead_id      text NOT NULL,
    submitted_at timestamptz,
    source_id    text,
    submitted    boolean NOT NULL,
    accepted     boolean NOT NULL,
    delivered    boolean NOT NULL,
    -- what the steps charged (flow.completed repeats the total and is left out)
    cost         numeric NOT NULL,
    PRIMARY KEY (flow_id, lead_id)
);
CREATE INDEX lead_facts_submitted ON lead_facts (flow_id, submitted_at);

-- Each enhancement step a lead went through: whether it succeeded on any attempt, and
-- its cost (the events' cost field; see projectors/insights.py). submitted_at (the
-- lead's) is what retention prunes it by (projectors/expiry.py).
CREATE TABLE lead_enhancements (
    flow_id      text NOT NULL,
    lead_id      text NOT NULL,
    step_id      text NOT NULL,
    submitted_at timestamptz,
    succeeded    boolean NOT NULL,
    runs         integer NOT NULL,
    cost         numeric NOT NULL,
    PRIMARY KEY (flow_id, lead_id, step_id)
);
CREATE INDEX lead_enhancements_submitted ON lead_enhancements (flow_id, submitted_at);

-- One row per recipient.delivered, and the buyer's feedback on it: a feedback event may
-- be read before the delivery it is about (another topic), so either side creates the
-- row and fills its own columns.
CREATE TABLE delivery_facts (
    flow_id      text NOT NULL,
    delivery_id  text NOT NULL,
    lead_id      text NOT NULL,
    recipient    text NOT NULL,
    delivered_at timestamptz,
    revenue      numeric,
    returned     boolean NOT NULL,
    converted_at timestamptz,
    PRIMARY KEY (flow_id, delivery_id)
);
CREATE INDEX delivery_facts_delivered ON delivery_facts (flow_id, delivered_at);
CREATE INDEX delivery_facts_lead ON delivery_facts (flow_id, lead_id);

-- The leads by the hour they were submitted in and what became of them, so questions about
-- leads (sources, enhancement value) read a few rows per hour, not a row per lead. Kept
-- by difference: every batch takes away the old contribution of the leads it touches and
-- adds their new one (projectors/analytics.py), so each row is the sum over its leads'
-- current state, whatever order their events came in. enhanced: the enhancement steps
-- that succeeded for the lead, sorted, comma-separated ('' for none).
CREATE TABLE hourly_lead_outcomes (
    flow_id          text NOT NULL,
    hour             timestamptz NOT NULL,
    source_id        text NOT NULL,
    submitted        boolean NOT NULL,
    accepted         boolean NOT NULL,
    delivered        boolean NOT NULL,
    enhanced         text NOT NULL,
    leads            bigint NOT NULL,
    cost             numeric NOT NULL,
    enhancement_cost numeric NOT NULL,
    revenue          numeric NOT NULL,
    PRIMARY KEY (flow_id, hour, source_id, submitted, accepted, delivered, enhanced)
);
