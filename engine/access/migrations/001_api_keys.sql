-- API keys (engine/access/store.py). Runs with search_path set to the configured schema.
-- Only a keyed hash of each key is kept: the plaintext is shown once, by `leadflow keys create`.
CREATE TABLE engine_api_keys (
    key_id          text PRIMARY KEY,          -- the public part of the key: lf_<key_id>_<secret>
    name            text NOT NULL,
    digest          bytea NOT NULL,            -- HMAC-SHA256(pepper, key)
    scopes          text[] NOT NULL,
    flows           text[],                    -- NULL: every flow
    rate_per_minute integer CHECK (rate_per_minute > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    replaced_by     text                       -- set by a rotation
);

-- Every clear-text read of lead data (a key with pii:read): who, when, which leads, where.
CREATE TABLE engine_pii_reads (
    id        bigserial PRIMARY KEY,
    key_id    text NOT NULL,
    read_at   timestamptz NOT NULL DEFAULT now(),
    route     text NOT NULL,
    lead_ids  text[] NOT NULL
);
CREATE INDEX engine_pii_reads_key ON engine_pii_reads (key_id, read_at);
