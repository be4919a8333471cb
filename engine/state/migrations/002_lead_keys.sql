-- Per-lead data keys (crypto-shredding, engine/sealing.py and engine/state/keys.py).
-- A lead's sensitive fields are sealed under its own data key, stored here wrapped by
-- the master key (never in clear). Deleting a lead's row makes every copy of its sealed
-- values unreadable: on the topics, in Postgres, in streamed objects.
CREATE TABLE engine_lead_keys (
    key_id        text PRIMARY KEY,          -- the lead id
    flow_id       text NOT NULL,
    master_key_id text NOT NULL,             -- which master key wrapped it (for rotation)
    wrapped       bytea NOT NULL,            -- nonce | AES-256-GCM(master, data key)
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- A person's leads by keyed hash (HMAC-SHA256, key derived from the master key) of their
-- normalised email or phone: erasure finds them without any clear value stored.
CREATE TABLE engine_person_index (
    kind       text NOT NULL CHECK (kind IN ('email', 'phone')),
    digest     bytea NOT NULL CHECK (octet_length(digest) = 32),
    lead_id    text NOT NULL,
    flow_id    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, digest, lead_id)
);
CREATE INDEX engine_person_index_lead ON engine_person_index (lead_id);

-- Tombstones: leads whose key was deleted. A replay of the intake topic must not give an
-- erased lead a new key (its values would still not open, but new ones would be sealed).
CREATE TABLE engine_erased_leads (
    lead_id   text PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);
