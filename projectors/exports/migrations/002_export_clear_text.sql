-- Whether a job's file holds lead data in clear text (its creator's key held pii:read)
-- or masked. Jobs from before keys existed were written in clear: they stay marked so.
ALTER TABLE export_jobs ADD COLUMN clear_text boolean NOT NULL DEFAULT true;
ALTER TABLE export_jobs ALTER COLUMN clear_text SET DEFAULT false;
