-- Retention (issue #18): the state tables are pruned by their own windows, in batches
-- (engine/state/pruning.py). Each batch finds its rows through one of these indexes
-- instead of scanning the table.

-- Cap windows that have ended (the ledger's rows go first, by the counters' key).
CREATE INDEX IF NOT EXISTS engine_cap_counters_window_end ON engine_cap_counters (window_end);

-- A flow's fingerprints older than its duplicate window.
CREATE INDEX IF NOT EXISTS engine_lead_fingerprints_flow_submitted
    ON engine_lead_fingerprints (flow_id, submitted_ms);

-- Pings past their expiry. The table is the intake API's (engine/api/migrations): where it
-- does not exist yet, the intake's own migration is what makes it, and pings are then
-- pruned without this index (their offers last minutes, so the table stays small).
DO $$
BEGIN
    IF to_regclass('engine_intake_pings') IS NOT NULL THEN
        CREATE INDEX IF NOT EXISTS engine_intake_pings_expires ON engine_intake_pings (expires_at);
    END IF;
END $$;
