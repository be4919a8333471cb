"""The timeline projection: one row per event and each lead's latest state.

Tables (``projectors/migrations/timeline``): ``events``, partitioned by day (UTC) and
keyed by (event id, time),
the whole event as JSONB next to its columns; ``leads``, one row per lead,
each column a function of the set of the lead's events (never of the order
they were read in). Readers use them through the serving schema's
views of the same names.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor, sql

from projectors.batch import EVENT_COLUMNS, Batch
from projectors.partitions import ensure_batch_days
from projectors.projection import Projection
from projectors.store import stage_events

_COLUMNS = [name for name, _ in EVENT_COLUMNS]

# An event is written once by its id: a replayed step re-records its events under the same
# ids with a new time, so the partitioned table's key (id, ts) cannot tell a copy; the id
# is claimed in event_ids (migration 007) and only the claim's row is written. One copy per
# id in a batch: the earliest recorded (its Kafka position), as the first write wins later.
_INSERT_EVENTS = sql.SQL(
    "WITH fresh AS ("
    " INSERT INTO event_ids (id, ts)"
    " SELECT DISTINCT ON (id) id, ts FROM events_stage"
    " ORDER BY id, kafka_topic, kafka_partition, kafka_offset"
    " ON CONFLICT (id) DO NOTHING RETURNING id, ts)"
    " INSERT INTO events ({columns}) SELECT {values} FROM events_stage s"
    " JOIN fresh USING (id, ts) ON CONFLICT (id, ts) DO NOTHING"
).format(
    columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    values=sql.SQL(", ").join(
        sql.SQL("convert_from(s.snapshot, 'UTF8')::jsonb")
        if name == "snapshot"
        else sql.SQL("s.") + sql.Identifier(name)
        for name in _COLUMNS
    ),
)

# Per lead in the batch: its newest event's state, merged into the stored row so that
# the row is a function of the set of the lead's events, never of the order they were
# read in (a rebuild may read the feedback topic before a buyer's, or one partition far
# ahead of another). Each column merges by a rule that does not care about order:
# the newest event's fields by id; cost and revenue those of the newest event carrying
# one (their event ids decide); the earliest submission, the latest time, completed or'd.
# The WHERE skips rows a batch would not change (a replay of old events writes nothing).
# submitted_at comes from any event: end_timestamp - total_ms is the submission time.
# The lead's cost is the source's, then flow.completed's total: an enhancement event's cost
# is that one lookup's (schema v5), which flow.completed's total includes.
_LEAD_COST = "type NOT LIKE 'enhancement.%'"
_UPSERT_LEADS = """
INSERT INTO leads AS l (lead_id, flow_id, status, last_event_id, last_event_type, last_step_id,
                        cost, cost_event_id, revenue, revenue_event_id, submitted_at,
                        updated_at, completed)
SELECT lead_id,
       (array_agg(flow_id ORDER BY id DESC))[1],
       (array_agg(outcome ORDER BY id DESC))[1],
       max(id),
       (array_agg(type ORDER BY id DESC))[1],
       (array_agg(step_id ORDER BY id DESC))[1],
       (array_agg(cost ORDER BY id DESC) FILTER (WHERE cost IS NOT NULL AND {lead_cost}))[1],
       max(id) FILTER (WHERE cost IS NOT NULL AND {lead_cost}),
       (array_agg(revenue ORDER BY id DESC) FILTER (WHERE revenue IS NOT NULL))[1],
       max(id) FILTER (WHERE revenue IS NOT NULL),
       min(to_timestamp((end_timestamp - total_ms) / 1000.0)),
       max(ts),
       bool_or(type = 'flow.completed')
FROM events_stage
GROUP BY lead_id
ON CONFLICT (lead_id) DO UPDATE SET
    flow_id = CASE WHEN EXCLUDED.last_event_id > l.last_event_id
                   THEN EXCLUDED.flow_id ELSE l.flow_id END,
    status = CASE WHEN EXCLUDED.last_event_id > l.last_event_id
                  THEN EXCLUDED.status ELSE l.status END,
    last_event_type = CASE WHEN EXCLUDED.last_event_id > l.last_event_id
                           THEN EXCLUDED.last_event_type ELSE l.last_event_type END,
    last_step_id = CASE WHEN EXCLUDED.last_event_id > l.last_event_id
                        THEN EXCLUDED.last_step_id ELSE l.last_step_id END,
    last_event_id = GREATEST(l.last_event_id, EXCLUDED.last_event_id),
    cost = CASE WHEN EXCLUDED.cost_event_id > coalesce(l.cost_event_id, '')
                THEN EXCLUDED.cost ELSE l.cost END,
    cost_event_id = GREATEST(l.cost_event_id, EXCLUDED.cost_event_id),
    revenue = CASE WHEN EXCLUDED.revenue_event_id > coalesce(l.revenue_event_id, '')
                   THEN EXCLUDED.revenue ELSE l.revenue END,
    revenue_event_id = GREATEST(l.revenue_event_id, EXCLUDED.revenue_event_id),
    submitted_at = LEAST(l.submitted_at, EXCLUDED.submitted_at),
    updated_at = GREATEST(l.updated_at, EXCLUDED.updated_at),
    completed = l.completed OR EXCLUDED.completed
WHERE EXCLUDED.last_event_id > l.last_event_id
   OR EXCLUDED.cost_event_id > coalesce(l.cost_event_id, '')
   OR EXCLUDED.revenue_event_id > coalesce(l.revenue_event_id, '')
   OR EXCLUDED.submitted_at < l.submitted_at
   OR EXCLUDED.updated_at > l.updated_at
   OR (EXCLUDED.completed AND NOT l.completed)
""".replace("{lead_cost}", _LEAD_COST)


def apply_timeline(cur: Cursor[Any], batch: Batch) -> int:
    stage_events(cur, batch)
    ensure_batch_days(cur)  # no insert ever lacks its day's partition
    cur.execute(_INSERT_EVENTS)
    inserted = cur.rowcount
    cur.execute(_UPSERT_LEADS)
    return inserted


TIMELINE = Projection("timeline", views=("events", "leads"), apply=apply_timeline)
