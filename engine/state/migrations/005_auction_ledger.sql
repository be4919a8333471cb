-- The auction ledger (engine/state/auctions.py): an auction's ranked bids, written before
-- its first post, and each post that did not take the lead, written before the next one.
-- A worker that dies mid-auction leaves its row behind; the replay reads it instead of
-- pinging again, so a buyer that bids differently the second time cannot change the
-- winner (and have the lead posted to two buyers). Insert-if-absent: the first recorded
-- ranking wins. ``json``, not ``jsonb``: the events come back with their keys in order.
CREATE TABLE engine_auction_ledger (
    auction_key text PRIMARY KEY,      -- the id of the step's first event (lead, step, attempt)
    lead_id     text NOT NULL,
    flow_id     text NOT NULL,
    step_id     text NOT NULL,
    pings       json NOT NULL,         -- the ping round's events (ping fields only: no PII)
    ranked      json NOT NULL,         -- [[buyer id, price], ...], best first
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Rows are needed only while an auction may be replayed (until its events are committed,
-- or a replay of its input topic within the topic's retention); retention prunes them by age.
CREATE INDEX engine_auction_ledger_created ON engine_auction_ledger (created_at);

-- The posts of an auction that did not take the lead, in order: their answers, so a replay
-- judges them as the first run did and posts next where the first run would have.
CREATE TABLE engine_auction_posts (
    auction_key text NOT NULL REFERENCES engine_auction_ledger ON DELETE CASCADE,
    position    integer NOT NULL CHECK (position >= 0),
    buyer_id    text NOT NULL,
    answer      json NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (auction_key, position)
);
