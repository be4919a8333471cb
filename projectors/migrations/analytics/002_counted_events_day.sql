-- Retention (issue #18): the rollups are pruned by day (projectors/expiry.py), and the
-- record of which events are counted with them, so it needs each event's day. Rows
-- counted before this migration have none (NULL) and are kept: their events' days are
-- not known here.
ALTER TABLE counted_events ADD COLUMN day date;
CREATE INDEX counted_events_day ON counted_events (day);
