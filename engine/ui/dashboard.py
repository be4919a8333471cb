"""The flow dashboard's data in one payload, with work bounded by days rather than by events.

A range is cut at UTC midnights: its whole days are read from the analytics
projection's per-day aggregate (``daily_event_counts``, a few rows per day
however busy the flow), and only the partial days at its edges from the
events themselves. So a week of a million-lead flow reads seven days of
aggregate rows plus the events of the (at most two) partial days of the types
each figure counts, never the week's events. A range of two days or less is
drawn per hour, which the aggregate cannot answer: it is read from events, and
is at most two days.

What sums cannot give is bounded instead of exact:

* step duration p50/p95 come from the range's latest ``DURATION_SAMPLE``
  decisions (one backwards walk of ``events (flow_id, ts)``, ``LIMIT``ed); each
  step says how many of its decisions were in that sample, and the mean and max
  next to them are exact (from the aggregate);
* sources follow the leads submitted in the range to whatever became of them,
  which no per-day row holds: one set-based read of those leads' events, whose
  ids start with the lead's submission time, so they are one range of
  ``events (flow_id, id)`` (no per-lead lookup);
* recipients are still counted from the range's ``recipient.*`` events
  (``projectors.stats.recipient_analytics``).

Whole days are as fresh as the ``analytics`` projector; the edges (today
included) as fresh as the timeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from projectors.params import TimeRange, iso_utc
from projectors.stats import SOURCE_TOTALS, VERDICT_TYPES, Interval, recipient_analytics
from projectors.store import Connection, translate_errors

DEFAULT_SPAN = timedelta(days=7)
TOP_REASONS = 10
# Durations of this many of the range's latest decisions give the steps' p50/p95.
DURATION_SAMPLE = 10_000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def bounded(when: TimeRange, now: datetime | None = None) -> TimeRange:
    """An open range is closed: the aggregates below scan the range, so it is never all time."""
    end = when.end or (now or datetime.now(UTC))
    start = when.start or end - DEFAULT_SPAN
    return TimeRange(start, end)


def interval_for(when: TimeRange) -> Interval:
    assert when.start is not None and when.end is not None
    span = when.end - when.start
    if span <= timedelta(days=2):
        return "hour"
    if span <= timedelta(days=93):
        return "day"
    return "week"


@dataclass(frozen=True, slots=True)
class Split:
    """A range as whole UTC days ``[first_day, end_day)`` (from the aggregate; empty when
    ``first_day == end_day``) and the partial days before and after them (from events;
    each ``(start, end)`` pair empty when equal)."""

    first_day: date
    end_day: date
    head: tuple[datetime, datetime]
    tail: tuple[datetime, datetime]

    def params(self) -> dict[str, Any]:
        return {
            "first_day": self.first_day,
            "end_day": self.end_day,
            "head_start": self.head[0],
            "head_end": self.head[1],
            "tail_start": self.tail[0],
            "tail_end": self.tail[1],
        }


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def split(start: datetime, end: datetime, whole_days: bool = True) -> Split:
    """``[start, end)`` cut at the first and last UTC midnight inside it; ``whole_days=False``
    (hourly buckets) leaves it all to events."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first = start.date() if start == _midnight(start.date()) else start.date() + timedelta(1)
    last = end.date()
    if not whole_days or first >= last:
        return Split(first, first, (start, end), (end, end))
    return Split(first, last, (start, _midnight(first)), (_midnight(last), end))


# The events of a split's partial days, for conditions on ``events`` (alias-free).
_EDGES = sql.SQL(
    "((ts >= %(head_start)s AND ts < %(head_end)s) OR (ts >= %(tail_start)s AND ts < %(tail_end)s))"
)
_DAYS = sql.SQL("day >= %(first_day)s AND day < %(end_day)s")

_OUTCOMES = sql.SQL(
    """
SELECT bucket, outcome, sum(n)::bigint AS count FROM (
    SELECT date_trunc(%(interval)s, day::timestamp) AT TIME ZONE 'UTC' AS bucket, outcome,
           sum(events) AS n
    FROM daily_event_counts
    WHERE flow_id = %(flow_id)s AND type = 'flow.completed' AND {days}
    GROUP BY 1, 2
    UNION ALL
    SELECT date_trunc(%(interval)s, ts, 'UTC'), outcome, count(*)
    FROM events
    WHERE flow_id = %(flow_id)s AND type = 'flow.completed' AND {edges}
    GROUP BY 1, 2
) x
GROUP BY 1, 2 ORDER BY 1, 2
"""
).format(days=_DAYS, edges=_EDGES)

# A reason of '' is no reason: the aggregate stores a missing one as ''.
_REASONS = sql.SQL(
    """
SELECT reason, step_id, type, sum(n)::bigint AS count,
       round(sum(n) / sum(sum(n)) OVER (), 4)::float8 AS share
FROM (
    SELECT reason, step_id, type, sum(events) AS n
    FROM daily_event_counts
    WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s) AND outcome <> 'success'
      AND reason <> '' AND {days}
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT reason, step_id, type, count(*)
    FROM events
    WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s) AND outcome <> 'success'
      AND reason <> '' AND {edges}
    GROUP BY 1, 2, 3
) x
GROUP BY 1, 2, 3
ORDER BY count DESC, step_id, reason
LIMIT %(limit)s
"""
).format(days=_DAYS, edges=_EDGES)

_STEPS = sql.SQL(
    """
WITH counted AS (
    SELECT step_id, outcome, sum(events) AS n, sum(ms_total) AS ms_total, max(ms_max) AS ms_max
    FROM daily_event_counts
    WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s) AND {days}
    GROUP BY 1, 2
    UNION ALL
    SELECT step_id, outcome, count(*), sum(ms), max(ms)
    FROM events
    WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s) AND {edges}
    GROUP BY 1, 2
), steps AS (
    SELECT step_id, sum(n)::bigint AS count,
           coalesce(sum(n) FILTER (WHERE outcome = 'success'), 0)::bigint AS success,
           coalesce(sum(n) FILTER (WHERE outcome = 'failure'), 0)::bigint AS failure,
           coalesce(sum(n) FILTER (WHERE outcome = 'error'), 0)::bigint AS error,
           round(sum(ms_total)::numeric / sum(n), 1)::float8 AS ms_mean,
           max(ms_max) AS ms_max
    FROM counted GROUP BY step_id
), latest AS (
    SELECT step_id, step_name, step_count, ms
    FROM events
    WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s)
      AND ts >= %(start)s AND ts < %(end)s
    ORDER BY ts DESC
    LIMIT %(sample)s
), sampled AS (
    SELECT step_id, max(step_name) AS step_name, min(step_count) AS position,
           count(*) AS sampled,
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1)::float8 AS ms_p50,
           round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1)::float8 AS ms_p95
    FROM latest GROUP BY step_id
)
SELECT step_id, step_name, count, success, failure, error,
       round(success::numeric / count, 4)::float8 AS success_rate,
       round(failure::numeric / count, 4)::float8 AS failure_rate,
       round(error::numeric / count, 4)::float8 AS error_rate,
       ms_mean, ms_p50, ms_p95, ms_max, coalesce(sampled, 0) AS sampled
FROM steps LEFT JOIN sampled USING (step_id)
ORDER BY position NULLS LAST, step_id
"""
).format(days=_DAYS, edges=_EDGES)

# The leads submitted in the range are the events with ids in [low, high) (an id starts
# with its lead's submission time), read as one range of events (flow_id, id); returns
# are those leads' own feedback events, so they are in the same range.
_SOURCES = sql.SQL(
    """
WITH lead_events AS (
    SELECT lead_id, id, type, entity_id, cost, revenue,
           snapshot #>> '{{vars,source.name}}' AS source_name,
           CASE WHEN type = 'feedback.processed'
                 AND snapshot #>> '{{vars,feedback.type}}' = 'return'
                THEN snapshot #>> '{{vars,feedback.recipient_event_id}}' END AS returns
    FROM events
    WHERE flow_id = %(flow_id)s AND id >= %(low)s AND id < %(high)s
), returned AS (
    SELECT DISTINCT returns AS id FROM lead_events WHERE returns IS NOT NULL
), lead_rows AS (
    SELECT max(e.entity_id) FILTER (WHERE e.type = 'source.submitted') AS source_id,
           max(e.source_name) FILTER (WHERE e.type = 'source.submitted') AS source_name,
           bool_or(e.type = 'source.submitted') AS submitted,
           bool_or(e.type = 'source.accepted') AS accepted,
           bool_or(e.type = 'recipient.delivered') AS delivered,
           coalesce(sum(e.cost) FILTER (WHERE e.type <> 'flow.completed'), 0) AS cost,
           coalesce(sum(e.revenue) FILTER (
               WHERE e.type = 'recipient.delivered' AND r.id IS NULL), 0) AS revenue
    FROM lead_events e LEFT JOIN returned r ON r.id = e.id
    GROUP BY e.lead_id
), per_lead AS (
    SELECT * FROM lead_rows WHERE submitted
)
{totals}
"""
).format(totals=SOURCE_TOTALS)


def id_floor(moment: datetime) -> str:
    """The lowest lead or event id of a lead submitted at or after ``moment`` (ids start with
    the submission time in ms, ``engine.ids``): 10 Crockford digits of it, then zeros."""
    ms = math.ceil(moment.timestamp() * 1000)
    return "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in range(9, -1, -1)) + "0" * 16


def _rows(
    conn: Connection, query: sql.SQL | sql.Composed, params: dict[str, Any]
) -> list[dict[str, Any]]:
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [
            {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
            for row in cur.fetchall()
        ]


def dashboard(conn: Connection, flow_id: str, when: TimeRange) -> dict[str, Any]:
    """Leads by final outcome per bucket, top rejection reasons, step durations, sources, buyers."""
    when = bounded(when)
    assert when.start is not None and when.end is not None
    interval = interval_for(when)
    cut = split(when.start, when.end, whole_days=interval != "hour")
    params = {
        **cut.params(),
        "flow_id": flow_id,
        "interval": interval,
        "verdicts": list(VERDICT_TYPES),
        "start": when.start,
        "end": when.end,
    }
    steps = _rows(conn, _STEPS, {**params, "sample": DURATION_SAMPLE})
    return {
        "flow_id": flow_id,
        "start": iso_utc(when.start),
        "end": iso_utc(when.end),
        "interval": interval,
        # What was read how: whole days from the aggregate, the edges from events.
        "days": {
            "start": cut.first_day.isoformat(),
            "end": cut.end_day.isoformat(),
            "count": (cut.end_day - cut.first_day).days,
        },
        "duration_sample": {"limit": DURATION_SAMPLE, "rows": sum(s["sampled"] for s in steps)},
        "outcomes": _rows(conn, _OUTCOMES, params),
        "reasons": _rows(conn, _REASONS, {**params, "limit": TOP_REASONS}),
        "steps": steps,
        "sources": _rows(
            conn,
            _SOURCES,
            {"flow_id": flow_id, "low": id_floor(when.start), "high": id_floor(when.end)},
        ),
        "recipients": recipient_analytics(conn, flow_id, when).rows,
    }
