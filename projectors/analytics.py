"""The analytics projection: events counted per flow, UTC day, step, type, outcome,
entity and reason (``daily_event_counts``), with durations, cost and revenue.

Counting is not idempotent the way inserting by id is, so every event id is
recorded in ``counted_events`` in the same statement that counts it; an event
met again (a replayed step, a rebuilt consumer) adds nothing.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projectors.batch import Batch
from projectors.projection import Projection
from projectors.store import stage_events

# ORDER BY: rows are upserted, and so locked, in key order, which keeps two
# projector instances counting into the same rows from deadlocking.
_COUNT = """
WITH fresh AS (
    INSERT INTO counted_events (id, day)
    SELECT DISTINCT ON (id) id, (ts AT TIME ZONE 'UTC')::date FROM events_stage ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), counted AS (
    SELECT flow_id, (ts AT TIME ZONE 'UTC')::date AS day, step_id, type, outcome,
           coalesce(entity_id, '') AS entity_id, coalesce(reason, '') AS reason,
           count(*) AS events, sum(ms) AS ms_total, max(ms) AS ms_max,
           coalesce(sum(cost::numeric), 0) AS cost, coalesce(sum(revenue::numeric), 0) AS revenue
    FROM (SELECT DISTINCT ON (id) * FROM events_stage ORDER BY id) AS s
    JOIN fresh USING (id)
    GROUP BY 1, 2, 3, 4, 5, 6, 7
)
INSERT INTO daily_event_counts AS d
    (flow_id, day, step_id, type, outcome, entity_id, reason, events, ms_total, ms_max, cost,
     revenue)
SELECT * FROM counted ORDER BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (flow_id, day, step_id, type, outcome, entity_id, reason) DO UPDATE SET
    events = d.events + EXCLUDED.events,
    ms_total = d.ms_total + EXCLUDED.ms_total,
    ms_max = GREATEST(d.ms_max, EXCLUDED.ms_max),
    cost = d.cost + EXCLUDED.cost,
    revenue = d.revenue + EXCLUDED.revenue
RETURNING (SELECT count(*) FROM fresh)
"""


def apply_analytics(cur: Cursor[Any], batch: Batch) -> int:
    stage_events(cur, batch)
    row = cur.execute(_COUNT).fetchone()  # one row per group touched, each with the same count
    return int(row[0]) if row else 0


ANALYTICS = Projection("analytics", views=("daily_event_counts",), apply=apply_analytics)
