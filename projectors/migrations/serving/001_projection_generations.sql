-- Every generation of every projection: a schema of its own holding one
-- complete, versioned table set. One generation per projection is active (the
-- serving schema's views point at it and live projectors write to it); a
-- rebuild fills a building one next to it and switches in one transaction.
-- Runs with search_path set to the serving schema (settings.db_schema).
CREATE TABLE projection_generations (
    projection   text NOT NULL,
    generation   integer NOT NULL,
    schema_name  text NOT NULL UNIQUE,
    state        text NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    -- A rebuild --from TIME starts each partition at TIME; null is the beginning.
    started_from timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    retired_at   timestamptz,
    PRIMARY KEY (projection, generation)
);

CREATE UNIQUE INDEX projection_generations_one_active
    ON projection_generations (projection) WHERE state = 'active';
CREATE UNIQUE INDEX projection_generations_one_building
    ON projection_generations (projection) WHERE state = 'building';
