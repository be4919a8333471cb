-- Paging a flow's events by id (GET /flows/{flow_id}/events?after_id=&sort=) reads
-- this index in order instead of scanning by time and sorting.
CREATE INDEX IF NOT EXISTS events_flow_id_id ON events (flow_id, id);
