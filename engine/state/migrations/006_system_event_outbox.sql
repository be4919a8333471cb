-- System events (issue #20, seed 004): `object.action` events about leadflow's own objects
-- (flows, destinations, export runs), written through an outbox. A row is inserted in the
-- same transaction as the state change it reports, so a change cannot commit without its
-- event nor an event without its change; the relay (engine/runtime/outbox_relay.py)
-- publishes pending rows to Kafka and stamps them. Published rows stay: the table is the
-- events' history in Postgres (flows' definitions included), which `GET /system-events`
-- reads.
CREATE TABLE system_event_outbox (
    id             text PRIMARY KEY,          -- ULID (engine.ids): unique, sorts by creation
    type           text NOT NULL CHECK (type ~ '^[a-z_]+\.[a-z_]+$'),  -- object.action
    flow_id        text,                      -- NULL: an event of no one flow
    subject        text NOT NULL,             -- what it is about, e.g. flows/demo; the Kafka key
    data           jsonb NOT NULL,            -- the resource object as it was at the event
    reason         text,
    occurred_at    timestamptz NOT NULL,
    published_at   timestamptz,               -- NULL: pending
    -- The order of publication, given by the relay under its lock: readers page by it, so a
    -- row whose transaction committed after a later-id row was published is not skipped.
    published_seq  bigint UNIQUE
);
CREATE SEQUENCE system_event_outbox_published_seq;

-- The relay's scan: only pending rows, which are few.
CREATE INDEX system_event_outbox_pending ON system_event_outbox (id) WHERE published_at IS NULL;
-- GET /system-events?type=: one type's events in publication order.
CREATE INDEX system_event_outbox_type ON system_event_outbox (type, published_seq);
