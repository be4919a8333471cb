-- The engine's shared state: cap counters and duplicate fingerprints.
-- Runs with search_path set to the configured schema (see engine/state/store.py).
-- Every row is keyed by lead id, so a lead re-run after a crash, a retry or a
-- replay finds its own row instead of being counted twice.

-- One row per cap period: the lock every reservation in that period takes, and
-- its count, always equal to its ledger rows (both change in one transaction).
CREATE TABLE engine_cap_counters (
    cap_key      text NOT NULL,          -- e.g. recipient:solar/premier:day@America/Chicago
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    count        integer NOT NULL CHECK (count >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cap_key, window_start)
);

-- The leads a cap period holds. A recipient reserves its row before the
-- delivery, confirms it when the buyer accepted and deletes it otherwise;
-- an unconfirmed row is a delivery in flight, and counts.
CREATE TABLE engine_cap_ledger (
    cap_key      text NOT NULL,
    window_start timestamptz NOT NULL,
    lead_id      text NOT NULL,
    reserved_at  timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    PRIMARY KEY (cap_key, window_start, lead_id),
    FOREIGN KEY (cap_key, window_start) REFERENCES engine_cap_counters ON DELETE CASCADE
);

-- Leads admitted by a flow with duplicate checking, by the sha256 of their
-- normalised duplicate fields (never the values themselves). The primary key
-- orders a fingerprint's leads by (submitted_ms, lead_id), the order that
-- decides which of two matching leads came first.
CREATE TABLE engine_lead_fingerprints (
    flow_id      text NOT NULL,
    fingerprint  bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    submitted_ms bigint NOT NULL,
    lead_id      text NOT NULL,
    admitted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_id, fingerprint, submitted_ms, lead_id)
);
