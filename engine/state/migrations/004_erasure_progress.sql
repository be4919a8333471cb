-- Erasure in two phases (engine/ops/erasure.py). Phase one, one transaction: the key row
-- goes and the tombstone is written (from then on nothing of the lead opens). Phase two
-- overwrites what can be overwritten (Postgres rows, objects, export files) and records
-- `lead.erased`; finished_at says it ran to the end, so `leadflow erase` run again after
-- a crash half way finishes exactly what was left (every part of phase two is idempotent).
ALTER TABLE engine_erased_leads ADD COLUMN flow_id text;
ALTER TABLE engine_erased_leads ADD COLUMN finished_at timestamptz;
