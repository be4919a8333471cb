"""The timeline projection: one row per event and each lead's latest state.

Tables (``projectors/migrations/timeline``): ``events``, keyed by event id,
the whole event as JSONB next to its columns; ``leads``, one row per lead
that only ever moves forward. Readers use them through the serving schema's
views of the same names.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor, sql

from projectors.batch import EVENT_COLUMNS, Batch
from projectors.projections import Projection
from projectors.projector import (
    DEFAULT_BATCH_MS,
    DEFAULT_BATCH_SIZE,
    Projector,
    ProjectorStats,
    ProjectorStopped,
    consumer_group,
)
from projectors.store import stage_events

__all__ = [
    "DEFAULT_BATCH_MS",
    "DEFAULT_BATCH_SIZE",
    "TIMELINE",
    "ProjectorStats",
    "ProjectorStopped",
    "TimelineProjector",
    "consumer_group",
]

_COLUMNS = [name for name, _ in EVENT_COLUMNS]

_INSERT_EVENTS = sql.SQL(
    "INSERT INTO events ({columns}) SELECT {values} FROM events_stage ON CONFLICT (id) DO NOTHING"
).format(
    columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    values=sql.SQL(", ").join(
        sql.SQL("convert_from(snapshot, 'UTF8')::jsonb")
        if name == "snapshot"
        else sql.Identifier(name)
        for name in _COLUMNS
    ),
)

# Per lead in the batch: its newest event's state. The WHERE keeps the row
# from moving backwards when the batch holds only older events (a replay, or
# one topic read ahead of another). submitted_at comes from any event:
# end_timestamp - total_ms is the submission time.
_UPSERT_LEADS = """
INSERT INTO leads AS l (lead_id, flow_id, status, last_event_id, last_event_type, last_step_id,
                        cost, revenue, submitted_at, updated_at, completed)
SELECT lead_id,
       (array_agg(flow_id ORDER BY id DESC))[1],
       (array_agg(outcome ORDER BY id DESC))[1],
       max(id),
       (array_agg(type ORDER BY id DESC))[1],
       (array_agg(step_id ORDER BY id DESC))[1],
       (array_agg(cost ORDER BY id DESC) FILTER (WHERE cost IS NOT NULL))[1],
       (array_agg(revenue ORDER BY id DESC) FILTER (WHERE revenue IS NOT NULL))[1],
       min(to_timestamp((end_timestamp - total_ms) / 1000.0)),
       max(ts),
       bool_or(type = 'flow.completed')
FROM events_stage
GROUP BY lead_id
ON CONFLICT (lead_id) DO UPDATE SET
    flow_id = EXCLUDED.flow_id,
    status = EXCLUDED.status,
    last_event_id = EXCLUDED.last_event_id,
    last_event_type = EXCLUDED.last_event_type,
    last_step_id = EXCLUDED.last_step_id,
    cost = COALESCE(EXCLUDED.cost, l.cost),
    revenue = COALESCE(EXCLUDED.revenue, l.revenue),
    submitted_at = LEAST(l.submitted_at, EXCLUDED.submitted_at),
    updated_at = GREATEST(l.updated_at, EXCLUDED.updated_at),
    completed = l.completed OR EXCLUDED.completed
WHERE EXCLUDED.last_event_id > l.last_event_id
"""


def apply_timeline(cur: Cursor[Any], batch: Batch) -> int:
    stage_events(cur, batch)
    cur.execute(_INSERT_EVENTS)
    inserted = cur.rowcount
    cur.execute(_UPSERT_LEADS)
    return inserted


TIMELINE = Projection("timeline", views=("events", "leads"), apply=apply_timeline)


class TimelineProjector(Projector):
    """The projector of ``TIMELINE``; what ``leadflow run``'s ``projector`` role runs."""

    projection = TIMELINE
