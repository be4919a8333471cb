-- Each streamed destination's lifecycle and last activity, shared by every process:
-- the streamers (which read the state every few seconds and pause while it is not
-- active), `leadflow flow apply` and `leadflow streamer ...` (which change it).
-- Runs with search_path set to the configured schema (see streamers/destination_state.py).
-- The transitions are also recorded as events on the leadflow.destinations topic;
-- this table is the current state only.
CREATE TABLE streamer_destinations (
    flow_id         text NOT NULL,
    destination     text NOT NULL,          -- Destination.key: stable within the flow
    name            text NOT NULL,          -- kind:bucket/prefix, for people (no credentials)
    state           text NOT NULL CHECK (state IN ('active', 'deactivated', 'disabled')),
    reason          text,                   -- why it is in this state
    changed_at      timestamptz NOT NULL DEFAULT now(),
    verified_at     timestamptz,            -- last passed verification
    last_object_key text,
    last_object_at  timestamptz,
    last_error      text,                   -- credential-free (streamers.errors.DestinationError)
    last_error_at   timestamptz,
    PRIMARY KEY (flow_id, destination)
);
