"""The analytics projection: events counted per flow, UTC day, step, type, outcome,
entity and reason (``daily_event_counts``), with durations, cost and revenue; per UTC
hour, the steps' counts, duration histograms and reasons by source; and per lead and
per delivery, what its events add up to (analytics migrations 003 and 004, read by
``projectors.insights``).

Counting is not idempotent the way inserting by id is, so every event id is
recorded in ``counted_events`` in the same statement that picks the batch's new
events; an event met again (a replayed step, a rebuilt consumer) adds nothing.
Every table is then fed from those new events only, by rules that do not depend on
the order events arrive in (sums, counts, OR, LEAST), so a rebuild recomputes every
row exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from psycopg import Cursor

from projectors.batch import EVENT_COLUMNS, Batch
from projectors.histogram import BOUNDS, TOP
from projectors.projection import Projection
from projectors.stats import VERDICT_TYPES
from projectors.store import stage_events

# The batch's events not counted before, with what the tables below read from their
# snapshots. Per session, emptied at commit, like events_stage.
_CREATE_FRESH = """
CREATE TEMP TABLE IF NOT EXISTS analytics_fresh (
    id text, lead_id text, flow_id text, step_id text, type text, outcome text,
    entity_id text, reason text, ts timestamptz, hour timestamptz, ms int8, wait_ms int8,
    cost float8, revenue float8, source_id text, submitted_at timestamptz, called boolean,
    verdict boolean, feedback_type text, feedback_of text
) ON COMMIT DELETE ROWS
"""

# What the snapshots say, read in Python (``_snapshot_facts``): parsing every snapshot
# into jsonb in Postgres cost five times the rest of the batch's write.
_CREATE_FACTS = """
CREATE TEMP TABLE IF NOT EXISTS analytics_snapshot_facts (
    id text, source_id text, submitted_ms int8, capped boolean, feedback_type text,
    feedback_of text
) ON COMMIT DELETE ROWS
"""
_FACT_TYPES = ["text", "text", "int8", "bool", "text", "text"]
_COPY_FACTS = "COPY analytics_snapshot_facts FROM STDIN (FORMAT BINARY)"

_PICK_FRESH = """
WITH fresh AS (
    INSERT INTO counted_events (id, day)
    SELECT DISTINCT ON (id) id, (ts AT TIME ZONE 'UTC')::date FROM events_stage ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO analytics_fresh
SELECT s.id, s.lead_id, s.flow_id, s.step_id, s.type, s.outcome, s.entity_id, s.reason,
       s.ts, date_trunc('hour', s.ts, 'UTC'), s.ms, s.wait_ms, s.cost, s.revenue,
       f.source_id, to_timestamp(f.submitted_ms / 1000.0),
       (starts_with(s.type, 'recipient.') OR starts_with(s.type, 'enhancement.'))
           AND NOT coalesce(f.capped, false),
       s.type = ANY(%(verdicts)s), f.feedback_type, f.feedback_of
FROM (SELECT DISTINCT ON (id) * FROM events_stage ORDER BY id) AS s
JOIN fresh USING (id)
LEFT JOIN analytics_snapshot_facts f USING (id)
"""

# ORDER BY in every upsert: rows are locked in key order, which keeps two projector
# instances counting into the same rows from deadlocking.
_DAILY = """
INSERT INTO daily_event_counts AS d
    (flow_id, day, step_id, type, outcome, entity_id, reason, events, ms_total, ms_max, cost,
     revenue)
SELECT flow_id, (ts AT TIME ZONE 'UTC')::date AS day, step_id, type, outcome,
       coalesce(entity_id, ''), coalesce(reason, ''),
       count(*), sum(ms), max(ms),
       coalesce(sum(cost::numeric), 0), coalesce(sum(revenue::numeric), 0)
FROM analytics_fresh
GROUP BY 1, 2, 3, 4, 5, 6, 7
ORDER BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (flow_id, day, step_id, type, outcome, entity_id, reason) DO UPDATE SET
    events = d.events + EXCLUDED.events,
    ms_total = d.ms_total + EXCLUDED.ms_total,
    ms_max = GREATEST(d.ms_max, EXCLUDED.ms_max),
    cost = d.cost + EXCLUDED.cost,
    revenue = d.revenue + EXCLUDED.revenue
"""

_HOURLY_STEPS = """
INSERT INTO hourly_step_stats AS h
    (flow_id, hour, step_id, type, outcome, events, ms_total, ms_max, calls, wait_total,
     wait_max, cost)
SELECT flow_id, hour, step_id, type, outcome, count(*), coalesce(sum(ms), 0),
       coalesce(max(ms), 0), count(*) FILTER (WHERE called),
       coalesce(sum(wait_ms) FILTER (WHERE called), 0),
       coalesce(max(wait_ms) FILTER (WHERE called), 0), coalesce(sum(cost::numeric), 0)
FROM analytics_fresh
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (flow_id, hour, step_id, type, outcome) DO UPDATE SET
    events = h.events + EXCLUDED.events,
    ms_total = h.ms_total + EXCLUDED.ms_total,
    ms_max = GREATEST(h.ms_max, EXCLUDED.ms_max),
    calls = h.calls + EXCLUDED.calls,
    wait_total = h.wait_total + EXCLUDED.wait_total,
    wait_max = GREATEST(h.wait_max, EXCLUDED.wait_max),
    cost = h.cost + EXCLUDED.cost
"""

# A decision's duration, and a call's response time, into the bucket [lo, hi) of
# projectors.histogram: width_bucket gives the 1-based index of the last bound <= value.
_DURATIONS = """
WITH measured AS (
    SELECT flow_id, hour, step_id, 'ms' AS metric, greatest(ms, 0) AS value
    FROM analytics_fresh WHERE verdict AND ms IS NOT NULL
    UNION ALL
    SELECT flow_id, hour, step_id, 'wait_ms', greatest(wait_ms, 0)
    FROM analytics_fresh WHERE called AND wait_ms IS NOT NULL
), bucketed AS (
    SELECT flow_id, hour, step_id, metric, width_bucket(value, %(bounds)s::int8[]) AS i
    FROM measured
)
INSERT INTO hourly_durations AS h (flow_id, hour, step_id, metric, lo, hi, events)
SELECT flow_id, hour, step_id, metric, (%(bounds)s::int8[])[i],
       coalesce((%(bounds)s::int8[])[i + 1], %(top)s), count(*)
FROM bucketed
GROUP BY flow_id, hour, step_id, metric, i
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (flow_id, hour, step_id, metric, lo) DO UPDATE SET events = h.events + EXCLUDED.events
"""

_REASONS = """
INSERT INTO hourly_reasons AS h (flow_id, hour, source_id, step_id, type, reason, events)
SELECT flow_id, hour, coalesce(source_id, ''), step_id, type, reason, count(*)
FROM analytics_fresh
WHERE verdict AND outcome <> 'success' AND reason IS NOT NULL AND reason <> ''
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY 1, 2, 3, 4, 5, 6
ON CONFLICT (flow_id, hour, source_id, step_id, type, reason) DO UPDATE SET
    events = h.events + EXCLUDED.events
"""

# Feedback carries the money it changed, not a step's cost: left out of the cost.
_LEADS = """
INSERT INTO lead_facts AS l
    (flow_id, lead_id, submitted_at, source_id, submitted, accepted, delivered, cost)
SELECT flow_id, lead_id, min(submitted_at), max(source_id),
       bool_or(type = 'source.submitted'), bool_or(type = 'source.accepted'),
       bool_or(type = 'recipient.delivered'),
       coalesce(sum(cost::numeric) FILTER (
           WHERE type <> 'flow.completed' AND NOT starts_with(type, 'feedback.')), 0)
FROM analytics_fresh
GROUP BY 1, 2
ORDER BY 1, 2
ON CONFLICT (flow_id, lead_id) DO UPDATE SET
    submitted_at = LEAST(l.submitted_at, EXCLUDED.submitted_at),
    source_id = GREATEST(l.source_id, EXCLUDED.source_id),
    submitted = l.submitted OR EXCLUDED.submitted,
    accepted = l.accepted OR EXCLUDED.accepted,
    delivered = l.delivered OR EXCLUDED.delivered,
    cost = l.cost + EXCLUDED.cost
"""

_ENHANCEMENTS = """
INSERT INTO lead_enhancements AS e
    (flow_id, lead_id, step_id, submitted_at, succeeded, runs, cost)
SELECT flow_id, lead_id, step_id, min(submitted_at), bool_or(type = 'enhancement.success'),
       count(*), coalesce(sum(cost::numeric), 0)
FROM analytics_fresh
WHERE verdict AND starts_with(type, 'enhancement.')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
ON CONFLICT (flow_id, lead_id, step_id) DO UPDATE SET
    submitted_at = LEAST(e.submitted_at, EXCLUDED.submitted_at),
    succeeded = e.succeeded OR EXCLUDED.succeeded,
    runs = e.runs + EXCLUDED.runs,
    cost = e.cost + EXCLUDED.cost
"""

# A delivery's own event sets when and for how much; feedback.processed on it whether it
# was returned and when it first converted. Either may come first.
_DELIVERIES = """
INSERT INTO delivery_facts AS d
    (flow_id, delivery_id, lead_id, recipient, delivered_at, revenue, returned, converted_at)
SELECT flow_id, delivery_id, max(lead_id), max(recipient), min(delivered_at), max(revenue),
       bool_or(returned), min(converted_at)
FROM (
    SELECT flow_id, id AS delivery_id, lead_id, step_id AS recipient, ts AS delivered_at,
           coalesce(revenue, 0)::numeric AS revenue, false AS returned,
           NULL::timestamptz AS converted_at
    FROM analytics_fresh WHERE type = 'recipient.delivered'
    UNION ALL
    SELECT flow_id, feedback_of, lead_id, entity_id, NULL, NULL, feedback_type = 'return',
           CASE WHEN feedback_type = 'conversion' THEN ts END
    FROM analytics_fresh
    WHERE type = 'feedback.processed' AND feedback_of IS NOT NULL AND entity_id IS NOT NULL
) x
GROUP BY 1, 2
ORDER BY 1, 2
ON CONFLICT (flow_id, delivery_id) DO UPDATE SET
    delivered_at = LEAST(d.delivered_at, EXCLUDED.delivered_at),
    revenue = coalesce(d.revenue, EXCLUDED.revenue),
    returned = d.returned OR EXCLUDED.returned,
    converted_at = LEAST(d.converted_at, EXCLUDED.converted_at)
"""

# The leads' contributions to hourly_lead_outcomes: taken (sign -1) from lead_facts,
# lead_enhancements and delivery_facts before this batch changes them, and again (+1)
# after; their sum per key is what the batch changed.
_CREATE_LEAD_DELTA = """
CREATE TEMP TABLE IF NOT EXISTS analytics_lead_delta (
    flow_id text, hour timestamptz, source_id text, submitted boolean, accepted boolean,
    delivered boolean, enhanced text, sign integer, cost numeric, enhancement_cost numeric,
    revenue numeric
) ON COMMIT DELETE ROWS
"""

# A lead with no submission time (none of its snapshots said) is kept under the epoch.
_LEAD_STATE = """
INSERT INTO analytics_lead_delta
SELECT l.flow_id, coalesce(date_trunc('hour', l.submitted_at, 'UTC'), 'epoch'),
       coalesce(l.source_id, ''), l.submitted, l.accepted, l.delivered,
       coalesce((SELECT string_agg(e.step_id, ',' ORDER BY e.step_id) FROM lead_enhancements e
                 WHERE e.flow_id = l.flow_id AND e.lead_id = l.lead_id AND e.succeeded), ''),
       %(sign)s, l.cost,
       coalesce((SELECT sum(e.cost) FROM lead_enhancements e
                 WHERE e.flow_id = l.flow_id AND e.lead_id = l.lead_id), 0),
       coalesce((SELECT sum(d.revenue) FROM delivery_facts d
                 WHERE d.flow_id = l.flow_id AND d.lead_id = l.lead_id
                   AND d.delivered_at IS NOT NULL AND NOT d.returned), 0)
FROM lead_facts l
WHERE (l.flow_id, l.lead_id) IN (SELECT DISTINCT flow_id, lead_id FROM analytics_fresh)
  AND (%(sign)s > 0
       OR (l.flow_id, l.lead_id) NOT IN (SELECT flow_id, lead_id FROM analytics_new_leads))
"""

# Two projector instances may hold events of one lead (its steps' topics are read by
# different members): each batch locks its leads' rows before reading their old state, so
# the other's change is either wholly before (and read as old) or wholly after. A lead
# new to the projection gets its row first (ON CONFLICT waits for another instance's
# uncommitted insert of it); the rows this batch created had no contribution to take away.
_CREATE_NEW_LEADS = """
CREATE TEMP TABLE IF NOT EXISTS analytics_new_leads (flow_id text, lead_id text)
ON COMMIT DELETE ROWS
"""
_CLAIM_LEADS = """
WITH created AS (
    INSERT INTO lead_facts AS l
        (flow_id, lead_id, submitted_at, source_id, submitted, accepted, delivered, cost)
    SELECT DISTINCT flow_id, lead_id, NULL::timestamptz, NULL, false, false, false, 0
    FROM analytics_fresh
    ORDER BY 1, 2
    ON CONFLICT (flow_id, lead_id) DO NOTHING
    RETURNING flow_id, lead_id
)
INSERT INTO analytics_new_leads SELECT * FROM created
"""
_LOCK_LEADS = """
SELECT 1 FROM lead_facts
WHERE (flow_id, lead_id) IN (SELECT DISTINCT flow_id, lead_id FROM analytics_fresh)
ORDER BY flow_id, lead_id
FOR UPDATE
"""

_LEAD_OUTCOMES = """
INSERT INTO hourly_lead_outcomes AS h
    (flow_id, hour, source_id, submitted, accepted, delivered, enhanced, leads, cost,
     enhancement_cost, revenue)
SELECT flow_id, hour, source_id, submitted, accepted, delivered, enhanced,
       sum(sign), sum(sign * cost), sum(sign * enhancement_cost), sum(sign * revenue)
FROM analytics_lead_delta
GROUP BY 1, 2, 3, 4, 5, 6, 7
HAVING sum(sign) <> 0 OR sum(sign * cost) <> 0 OR sum(sign * enhancement_cost) <> 0
    OR sum(sign * revenue) <> 0
ORDER BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (flow_id, hour, source_id, submitted, accepted, delivered, enhanced) DO UPDATE SET
    leads = h.leads + EXCLUDED.leads,
    cost = h.cost + EXCLUDED.cost,
    enhancement_cost = h.enhancement_cost + EXCLUDED.enhancement_cost,
    revenue = h.revenue + EXCLUDED.revenue
"""

# A key no lead is in any more holds zeros only (its sums are over no lead): gone, as a
# rebuild would never have made it. (Its own statement: a statement's DELETE does not see
# what its WITH's INSERT changed.)
_EMPTY_OUTCOMES = """
DELETE FROM hourly_lead_outcomes h
USING (SELECT DISTINCT flow_id, hour, source_id, submitted, accepted, delivered, enhanced
       FROM analytics_lead_delta) d
WHERE h.leads = 0
  AND (h.flow_id, h.hour, h.source_id, h.submitted, h.accepted, h.delivered, h.enhanced)
    = (d.flow_id, d.hour, d.source_id, d.submitted, d.accepted, d.delivered, d.enhanced)
"""

_EVENT_STATEMENTS = (_DAILY, _HOURLY_STEPS, _DURATIONS, _REASONS)
_LEAD_STATEMENTS = (_LEADS, _ENHANCEMENTS, _DELIVERIES)


_ID, _SNAPSHOT = 0, [name for name, _ in EVENT_COLUMNS].index("snapshot")


def _text(value: Any) -> str | None:
    """A snapshot value as text, the way Postgres' ``#>>`` would give it."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _snapshot_facts(batch: Batch) -> Iterator[tuple[Any, ...]]:
    """Per event id (once): its lead's source, submission time (ms), whether a cap refused
    it unsent, and what feedback it carries, from the snapshot the row holds."""
    seen: set[str] = set()
    for row in batch.events:
        if row[_ID] in seen:
            continue
        seen.add(row[_ID])
        event = orjson.loads(row[_SNAPSHOT])
        fields = event.get("vars") or {}
        submitted = fields.get("submission.timestamp")
        yield (
            row[_ID],
            _text(fields.get("source.id")),
            submitted if isinstance(submitted, int) and not isinstance(submitted, bool) else None,
            event.get("cap_reached") is True,
            _text(fields.get("feedback.type")),
            _text(fields.get("feedback.recipient_event_id")),
        )


def apply_analytics(cur: Cursor[Any], batch: Batch) -> int:
    stage_events(cur, batch)
    cur.execute(_CREATE_FRESH)
    cur.execute(_CREATE_FACTS)
    # Empty already, unless an earlier batch of the same outer transaction (a rebuild's
    # final drain, written in savepoints) picked rows.
    cur.execute("DELETE FROM analytics_fresh")
    cur.execute("DELETE FROM analytics_snapshot_facts")
    with cur.copy(_COPY_FACTS) as copy:
        copy.set_types(_FACT_TYPES)
        for facts in _snapshot_facts(batch):
            copy.write_row(facts)
    cur.execute(_PICK_FRESH, {"verdicts": list(VERDICT_TYPES)})
    fresh = cur.rowcount
    if fresh <= 0:
        return 0
    params = {"bounds": list(BOUNDS), "top": TOP}
    for statement in _EVENT_STATEMENTS:
        cur.execute(statement, params if "%(" in statement else None)
    cur.execute(_CREATE_LEAD_DELTA)
    cur.execute(_CREATE_NEW_LEADS)
    cur.execute("DELETE FROM analytics_lead_delta")
    cur.execute("DELETE FROM analytics_new_leads")
    cur.execute(_CLAIM_LEADS)
    cur.execute(_LOCK_LEADS)
    cur.execute(_LEAD_STATE, {"sign": -1})
    for statement in _LEAD_STATEMENTS:
        cur.execute(statement)
    cur.execute(_LEAD_STATE, {"sign": 1})
    cur.execute(_LEAD_OUTCOMES)
    cur.execute(_EMPTY_OUTCOMES)
    return fresh


ANALYTICS = Projection(
    "analytics",
    views=(
        "daily_event_counts",
        "hourly_step_stats",
        "hourly_durations",
        "hourly_reasons",
        "lead_facts",
        "lead_enhancements",
        "delivery_facts",
        "hourly_lead_outcomes",
    ),
    apply=apply_analytics,
)
