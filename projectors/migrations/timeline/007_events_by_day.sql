-- Retention (issue #18): events partitioned by day (UTC) on ts, native declarative
-- partitioning, so expiry drops whole partitions (DETACH + DROP: no DELETE, no vacuum
-- debt) instead of deleting rows. Daily, not weekly: at 100M events a day a week is
-- 700M rows in one table, kept up to a week past its retention; 90 daily partitions
-- (and 8 made ahead) are few for the planner, which prunes them on every ts range.
--
-- The existing table is copied into the partitioned one, columns and values as they
-- are (xid included, so paging by (xid, id) goes on where it was). A key of a partitioned
-- table must hold the partition key: events are keyed (id, ts) now, and the id alone is
-- kept unique by event_ids (below).
-- One rewrite of the table: on a big projection run it at a quiet time, as 005 and 006.

ALTER TABLE events RENAME TO events_unpartitioned;

-- The old indexes go with the old table; drop them now to free their names.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'events_unpartitioned'::regclass AND contype IN ('p', 'u') LOOP
        EXECUTE format('ALTER TABLE events_unpartitioned DROP CONSTRAINT %I', r.conname);
    END LOOP;
    FOR r IN SELECT indexname FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'events_unpartitioned' LOOP
        EXECUTE format('DROP INDEX %I', r.indexname);
    END LOOP;
END $$;

CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (ts);

-- The partitions of the given days that do not exist yet, made; returns how many. Called
-- by the projector ahead of time and for every batch's days (projectors/partitions.py),
-- so no insert ever lacks its partition. The advisory lock keeps two projectors from
-- making the same one; the check before it keeps the usual call (all exist) lock-free.
CREATE FUNCTION ensure_event_partitions(days date[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
    made integer := 0;
BEGIN
    FOREACH d IN ARRAY days LOOP
        CONTINUE WHEN d IS NULL;
        part := 'events_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(format('%I.%I', current_schema(), part)) IS NOT NULL;
        PERFORM pg_advisory_xact_lock(hashtextextended('leadflow.partitions.' || current_schema(), 0));
        CONTINUE WHEN to_regclass(format('%I.%I', current_schema(), part)) IS NOT NULL;
        EXECUTE format(
            'CREATE TABLE %I.%I PARTITION OF %I.events FOR VALUES FROM (%L) TO (%L)',
            current_schema(), part, current_schema(),
            d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
        made := made + 1;
    END LOOP;
    RETURN made;
END $$;

SELECT ensure_event_partitions(ARRAY(
    SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM events_unpartitioned
    UNION
    SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 1,
                           (now() AT TIME ZONE 'UTC')::date + 7, interval '1 day')::date
));

INSERT INTO events SELECT * FROM events_unpartitioned;

-- CASCADE: the serving schema's view of the old table; the migration's caller points the
-- views at the new one in the same transaction (projectors/generations.py).
DROP TABLE events_unpartitioned CASCADE;

-- The indexes of 001-005, on every partition (and on each one made later).
ALTER TABLE events ADD PRIMARY KEY (id, ts);
CREATE INDEX events_lead_id_id ON events (lead_id, id);
CREATE INDEX events_flow_id_ts ON events (flow_id, ts);
CREATE INDEX events_type ON events (type);
CREATE INDEX events_outcome ON events (outcome);
CREATE INDEX events_flow_id_id ON events (flow_id, id);
CREATE INDEX events_xid_id ON events (xid, id);
CREATE INDEX events_flow_id_xid_id ON events (flow_id, xid, id);
CREATE INDEX events_accepted_email ON events ((snapshot #>> '{vars,lead.email}'))
    WHERE type = 'source.accepted';
CREATE INDEX events_accepted_phones ON events USING gin ((ARRAY[
    snapshot #>> '{vars,lead.phone_1}',
    snapshot #>> '{vars,lead.phone_2}',
    snapshot #>> '{vars,lead.phone_3}',
    snapshot #>> '{vars,lead.phone}'
])) WHERE type = 'source.accepted';
CREATE INDEX events_flow_id_type_ts_id ON events (flow_id, type, ts, id);

-- Every event once, by id alone: a replayed step re-records its events under the same ids
-- with a new time, so (id, ts) cannot tell a copy from a new event. The write path claims
-- the id here first (timeline.py); the copy's claim conflicts and writes nothing. Pruned by
-- ts with the partitions (projectors/expiry.py).
CREATE TABLE event_ids (
    id text PRIMARY KEY,
    ts timestamptz NOT NULL
);
INSERT INTO event_ids (id, ts) SELECT id, ts FROM events;
CREATE INDEX event_ids_ts ON event_ids (ts);

-- Expiry deletes the leads whose latest event is older than every partition kept.
CREATE INDEX leads_updated_at ON leads (updated_at);
