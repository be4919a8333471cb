-- Browsing a flow's leads by one event type (the operator UI's list, newest first:
-- ORDER BY ts DESC, id DESC after a (ts, id) keyset cursor) reads this index backwards
-- from the first row it needs. Without it, a rare type (filter.failed) walks
-- events (flow_id, ts) back through every other type's events until a page fills.
-- The dashboard's edges (partial days) read one type's events of a range through it too.
CREATE INDEX IF NOT EXISTS events_flow_id_type_ts_id ON events (flow_id, type, ts, id);
