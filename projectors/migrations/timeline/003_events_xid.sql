-- Insertion order, for paging that never skips or repeats while events keep
-- arriving. Event ids sort by submission time, so a late event of an early
-- lead gets an id below ids a client has already paged past; the writing
-- transaction's id (xid8) does not go back in time. Readers page by
-- (xid, id) and only read transactions older than every one still running
-- (pg_snapshot_xmin), so a row cannot commit behind a cursor (see projectors/search.py).
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_xid_id ON events (xid, id);
CREATE INDEX events_flow_id_xid_id ON events (flow_id, xid, id);
