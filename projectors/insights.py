"""The seed's analytics questions (issue #20, seed 002), read from the analytics projection
(analytics migrations 003 and 004) rather than from events, so a range costs rows per hour
(and the deliveries made in it, for the buyers' money), not per event, and a rebuild gives
the same answers.

What each figure counts:

* **hours**: a range selects every UTC hour it overlaps (the hourly rows cannot be cut):
  events by their own hour, leads by the hour they were submitted in (whatever happened
  to them later, ``hourly_lead_outcomes``), buyers' money by the deliveries made in them;
* **percentiles** come from the hourly histograms (``projectors.histogram``): nearest rank,
  read as the largest value of the bucket that holds it (exact below 32 ms, at most 1/16
  above the true value beyond); means and maxima are exact;
* **percentages** (``*_pct``) are 0-100, two decimals, beside the count they are of;
* **cost of an enhancement** is the ``cost`` field of its ``enhancement.*`` events, what
  the step charged for each lookup (0 where it records none); nothing here reads the
  flow's configuration, which a rebuild could not see as it was when the events were
  recorded;
* **revenue** is each delivery's price unless the buyer returned it (``feedback.processed``
  of type return), as in ``projectors.stats``.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from projectors.params import TimeRange
from projectors.stats import VERDICT_TYPES, Table, query_table
from projectors.store import Connection

_HOURS = sql.SQL(
    "hour >= date_trunc('hour', coalesce(%(start)s::timestamptz, '-infinity'), 'UTC')"
    " AND hour < coalesce(%(end)s::timestamptz, 'infinity')"
)
# The deliveries made in the hours the range overlaps, as _HOURS selects hourly rows.
_DELIVERED = sql.SQL(
    "delivered_at >= date_trunc('hour', coalesce(%(start)s::timestamptz, '-infinity'), 'UTC')"
    # before the first hour boundary at or after end: index-friendly on both sides
    " AND delivered_at < date_trunc('hour', coalesce(%(end)s::timestamptz, 'infinity')"
    " + interval '1 hour' - interval '1 microsecond', 'UTC')"
)


def _pct(part: sql.Composable, whole: sql.Composable) -> sql.Composed:
    return sql.SQL("round(100.0 * ({}) / nullif({}, 0), 2)::float8").format(part, whole)


def _col(name: str) -> sql.Composable:
    return sql.Identifier(*name.split("."))


def _params(flow_id: str, when: TimeRange, **more: Any) -> dict[str, Any]:
    return {"flow_id": flow_id, "start": when.start, "end": when.end, **more}


# Percentiles per group from histogram rows (group keys, lo, hi, n): nearest rank, the
# bucket's largest value (projectors.histogram.percentile computes the same in Python).
_PERCENTILES = sql.SQL(
    """
ranked AS (
    SELECT {keys}, hi, sum(n) OVER (PARTITION BY {keys} ORDER BY lo) AS seen,
           sum(n) OVER (PARTITION BY {keys}) AS total
    FROM hist
), percentiles AS (
    SELECT {keys},
           min(hi) FILTER (WHERE seen >= ceil(0.5 * total)) - 1 AS p50,
           min(hi) FILTER (WHERE seen >= ceil(0.95 * total)) - 1 AS p95
    FROM ranked GROUP BY {keys}
)"""
)

_STEPS = sql.SQL(
    """
WITH counts AS (
    SELECT step_id, {hour} AS hour, sum(events) AS n,
           coalesce(sum(events) FILTER (WHERE outcome = 'success'), 0) AS success,
           coalesce(sum(events) FILTER (WHERE outcome = 'failure'), 0) AS failure,
           coalesce(sum(events) FILTER (WHERE outcome = 'error'), 0) AS error,
           sum(ms_total) AS ms_total, max(ms_max) AS ms_max
    FROM hourly_step_stats
    WHERE flow_id = %(flow_id)s AND type = ANY(%(verdicts)s) AND {hours}
    GROUP BY 1, 2
), hist AS (
    SELECT step_id, {hour} AS hour, lo, hi, sum(events) AS n
    FROM hourly_durations
    WHERE flow_id = %(flow_id)s AND metric = 'ms' AND {hours}
    GROUP BY 1, 2, 3, 4
),
{percentiles}
SELECT step_id, {hour_column}n::bigint AS count,
       success::bigint, {success_pct} AS success_pct,
       failure::bigint, {failure_pct} AS failure_pct,
       error::bigint, {error_pct} AS error_pct,
       round(ms_total::numeric / n, 1)::float8 AS ms_mean,
       p50 AS ms_p50, p95 AS ms_p95, ms_max
FROM counts LEFT JOIN percentiles USING (step_id, hour)
ORDER BY step_id, hour
"""
)


def step_performance(
    conn: Connection, flow_id: str, when: TimeRange, per_hour: bool = False
) -> Table:
    """Per step (and per UTC hour with ``per_hour``): decisions, each outcome with its
    percentage, and the duration's mean, p50, p95 and max."""
    query = _STEPS.format(
        # One constant "hour" for the whole range: the join below matches on it.
        hour=sql.SQL("hour" if per_hour else "'-infinity'::timestamptz"),
        hours=_HOURS,
        hour_column=sql.SQL("hour, " if per_hour else ""),
        percentiles=_PERCENTILES.format(keys=sql.SQL("step_id, hour")),
        success_pct=_pct(_col("success"), _col("n")),
        failure_pct=_pct(_col("failure"), _col("n")),
        error_pct=_pct(_col("error"), _col("n")),
    )
    params = _params(flow_id, when, verdicts=list(VERDICT_TYPES))
    return query_table(conn, query, params)


_REJECTIONS = sql.SQL(
    """
SELECT nullif(source_id, '') AS source_id, step_id, type, reason, count::bigint,
       round(100.0 * count / sum(count) OVER (), 2)::float8 AS pct,
       round(100.0 * count / sum(count) OVER (PARTITION BY source_id), 2)::float8
           AS pct_of_source
FROM (
    SELECT source_id, step_id, type, reason, sum(events) AS count
    FROM hourly_reasons
    WHERE flow_id = %(flow_id)s AND {hours}
      AND (%(source_id)s::text IS NULL OR source_id = %(source_id)s)
      AND (%(step_id)s::text IS NULL OR step_id = %(step_id)s)
    GROUP BY 1, 2, 3, 4
) r
ORDER BY count DESC, source_id, step_id, reason
LIMIT %(limit)s
"""
).format(hours=_HOURS)


def rejections(
    conn: Connection,
    flow_id: str,
    when: TimeRange,
    source_id: str | None = None,
    step_id: str | None = None,
    limit: int | None = None,
) -> Table:
    """Refusals, failures and errors by the lead's source, step and reason, most frequent
    first (the first ``limit``): ``pct`` of all of them in the selection, the rows left out
    included, ``pct_of_source`` of the source's."""
    params = _params(flow_id, when, source_id=source_id, step_id=step_id, limit=limit)
    return query_table(conn, _REJECTIONS, params)


# Lead answers read hourly_lead_outcomes: the leads by submission hour, source, whether
# they were accepted and delivered, and which enhancements succeeded for them.
_ENHANCEMENTS = sql.SQL(
    """
WITH outcomes AS (
    SELECT string_to_array(nullif(enhanced, ''), ',') AS enhanced, delivered, leads, revenue
    FROM hourly_lead_outcomes
    WHERE flow_id = %(flow_id)s AND accepted AND {hours}
), costs AS (
    SELECT step_id, sum(cost) AS cost FROM hourly_step_stats
    WHERE flow_id = %(flow_id)s AND starts_with(type, 'enhancement.') AND {hours}
    GROUP BY step_id
), steps AS (
    SELECT step_id FROM costs
    UNION SELECT DISTINCT unnest(enhanced) FROM outcomes
), totals AS (
    SELECT s.step_id,
           coalesce(sum(o.leads) FILTER (WHERE s.step_id = ANY(o.enhanced)), 0) AS leads_with,
           coalesce(sum(o.leads) FILTER (WHERE NOT coalesce(s.step_id = ANY(o.enhanced), false)),
                    0) AS leads_without,
           coalesce(sum(o.leads) FILTER (WHERE s.step_id = ANY(o.enhanced) AND o.delivered), 0)
               AS delivered_with,
           coalesce(sum(o.leads) FILTER (
               WHERE NOT coalesce(s.step_id = ANY(o.enhanced), false) AND o.delivered), 0)
               AS delivered_without,
           coalesce(sum(o.revenue) FILTER (WHERE s.step_id = ANY(o.enhanced)), 0) AS revenue_with,
           coalesce(sum(o.revenue) FILTER (WHERE NOT coalesce(s.step_id = ANY(o.enhanced), false)),
                    0) AS revenue_without
    FROM steps s CROSS JOIN outcomes o
    GROUP BY s.step_id
)
SELECT s.step_id, coalesce(leads_with, 0)::bigint AS leads_with,
       coalesce(delivered_with, 0)::bigint AS delivered_with,
       {delivery_with} AS delivery_pct_with,
       coalesce(leads_without, 0)::bigint AS leads_without,
       coalesce(delivered_without, 0)::bigint AS delivered_without,
       {delivery_without} AS delivery_pct_without,
       round(coalesce(c.cost, 0), 4)::float8 AS cost,
       round(coalesce(revenue_with, 0), 4)::float8 AS revenue_with,
       round(coalesce(revenue_without, 0), 4)::float8 AS revenue_without,
       round(revenue_with / nullif(leads_with, 0), 4)::float8 AS revenue_per_lead_with,
       round(revenue_without / nullif(leads_without, 0), 4)::float8 AS revenue_per_lead_without,
       round(revenue_with / nullif(leads_with, 0)
             - revenue_without / nullif(leads_without, 0), 4)::float8 AS revenue_difference
FROM steps s LEFT JOIN totals t USING (step_id) LEFT JOIN costs c USING (step_id)
ORDER BY s.step_id
"""
).format(
    hours=_HOURS,
    delivery_with=_pct(_col("delivered_with"), _col("leads_with")),
    delivery_without=_pct(_col("delivered_without"), _col("leads_without")),
)


def enhancement_value(conn: Connection, flow_id: str, when: TimeRange) -> Table:
    """Per enhancement step, over the accepted leads submitted in the range's hours: the
    delivery rate of those it enhanced (a success on any attempt) against the rest (failed,
    erred, skipped, or never reached), and the revenue per lead of each side
    (``revenue_difference`` is with minus without, per lead); its cost is what its events
    charged in the range's hours."""
    return query_table(conn, _ENHANCEMENTS, _params(flow_id, when))


_SOURCES = sql.SQL(
    """
WITH totals AS (
    SELECT source_id, sum(leads) AS submitted,
           coalesce(sum(leads) FILTER (WHERE accepted), 0) AS accepted,
           coalesce(sum(leads) FILTER (WHERE delivered), 0) AS delivered,
           sum(enhancement_cost) AS enhancement_cost, sum(cost) AS cost,
           sum(revenue) AS revenue
    FROM hourly_lead_outcomes
    WHERE flow_id = %(flow_id)s AND submitted AND {hours}
    GROUP BY source_id
)
SELECT nullif(source_id, '') AS source_id, submitted::bigint, accepted::bigint,
       {accepted_pct} AS acceptance_pct,
       round(enhancement_cost, 4)::float8 AS enhancement_cost,
       delivered::bigint, {delivered_pct} AS delivery_pct,
       round(cost, 4)::float8 AS cost, round(revenue, 4)::float8 AS revenue,
       round(revenue - cost, 4)::float8 AS profit
FROM totals
ORDER BY submitted DESC, source_id
"""
).format(
    hours=_HOURS,
    accepted_pct=_pct(_col("accepted"), _col("submitted")),
    delivered_pct=_pct(_col("delivered"), _col("accepted")),
)


def source_performance(conn: Connection, flow_id: str, when: TimeRange) -> Table:
    """Per source, over the leads it submitted in the range's hours: acceptance rate, what
    the enhancements cost, delivery rate (of the accepted), revenue net of returns, and
    profit (revenue less everything the steps charged, the source's price included)."""
    return query_table(conn, _SOURCES, _params(flow_id, when))


_BUYERS = sql.SQL(
    """
WITH counts AS (
    SELECT step_id, sum(events) AS offered,
           coalesce(sum(events) FILTER (WHERE type = 'recipient.delivered'), 0) AS accepted,
           coalesce(sum(events) FILTER (WHERE type = 'recipient.failed'), 0) AS failed,
           coalesce(sum(events) FILTER (WHERE type = 'recipient.error'), 0) AS errors,
           sum(calls) AS calls, sum(wait_total) AS wait_total, max(wait_max) AS wait_max
    FROM hourly_step_stats
    WHERE flow_id = %(flow_id)s AND starts_with(type, 'recipient.')
      AND type = ANY(%(verdicts)s) AND {hours}
    GROUP BY 1
), hist AS (
    SELECT step_id, lo, hi, sum(events) AS n
    FROM hourly_durations
    WHERE flow_id = %(flow_id)s AND metric = 'wait_ms'
      AND step_id IN (SELECT step_id FROM counts) AND {hours}
    GROUP BY 1, 2, 3
),
{percentiles}, deliveries AS (
    SELECT recipient AS step_id, count(*) AS deliveries, count(DISTINCT lead_id) AS leads,
           coalesce(sum(revenue) FILTER (WHERE NOT returned), 0) AS revenue,
           count(*) FILTER (WHERE returned) AS returned,
           count(*) FILTER (WHERE converted_at IS NOT NULL) AS converted,
           round((avg(extract(epoch FROM converted_at - delivered_at))
                  / 86400)::numeric, 2)::float8 AS days_to_convert
    FROM delivery_facts
    WHERE flow_id = %(flow_id)s AND {delivered}
    GROUP BY 1
)
SELECT step_id, offered::bigint, accepted::bigint, {accepted_pct} AS acceptance_pct,
       failed::bigint, {failed_pct} AS failed_pct, errors::bigint, {errors_pct} AS error_pct,
       calls::bigint, round(wait_total::numeric / nullif(calls, 0), 1)::float8
           AS response_ms_mean,
       p95 AS response_ms_p95, wait_max AS response_ms_max,
       coalesce(d.deliveries, 0) AS deliveries,
       round(coalesce(d.revenue, 0), 4)::float8 AS revenue,
       round(d.revenue / nullif(d.leads, 0), 4)::float8 AS revenue_per_lead,
       coalesce(d.returned, 0) AS returned, {returned_pct} AS returns_pct,
       coalesce(d.converted, 0) AS converted, {converted_pct} AS conversions_pct,
       d.days_to_convert
FROM counts c
LEFT JOIN percentiles USING (step_id)
LEFT JOIN deliveries d USING (step_id)
ORDER BY step_id
"""
).format(
    percentiles=_PERCENTILES.format(keys=sql.SQL("step_id")),
    hours=_HOURS,
    delivered=_DELIVERED,
    accepted_pct=_pct(_col("accepted"), _col("offered")),
    failed_pct=_pct(_col("failed"), _col("offered")),
    errors_pct=_pct(_col("errors"), _col("offered")),
    returned_pct=_pct(_col("d.returned"), _col("d.deliveries")),
    converted_pct=_pct(_col("d.converted"), _col("d.deliveries")),
)


def buyer_behaviour(conn: Connection, flow_id: str, when: TimeRange) -> Table:
    """Per recipient step: its answers in the range's hours (each attempt is one: a retried
    timeout counts as an error and then as what the retry got), with percentages; its
    response time (``wait_ms`` of the calls made; a capped lead is not sent) mean, p95 and
    max; and of the deliveries made in the range, the revenue net of returns, per lead, and
    the feedback on them: returns and conversions per delivery, mean days to convert."""
    params = _params(flow_id, when, verdicts=list(VERDICT_TYPES))
    return query_table(conn, _BUYERS, params)


_BUYER_HOURS = sql.SQL(
    """
SELECT step_id, extract(hour FROM hour AT TIME ZONE %(timezone)s)::int AS hour_of_day,
       sum(events)::bigint AS offered,
       coalesce(sum(events) FILTER (WHERE type = 'recipient.delivered'), 0)::bigint AS accepted,
       {accepted_pct} AS acceptance_pct
FROM hourly_step_stats
WHERE flow_id = %(flow_id)s AND starts_with(type, 'recipient.') AND type = ANY(%(verdicts)s)
  AND {hours}
GROUP BY 1, 2
ORDER BY 1, 2
"""
).format(
    hours=_HOURS,
    # coalesce: a buyer that accepted nothing in an hour accepted 0 %, not an unknown share.
    accepted_pct=_pct(
        sql.SQL("coalesce(sum(events) FILTER (WHERE type = 'recipient.delivered'), 0)"),
        sql.SQL("sum(events)"),
    ),
)


def buyer_hours(conn: Connection, flow_id: str, when: TimeRange, timezone: str = "UTC") -> Table:
    """Per recipient step and hour of the day (0-23 in ``timezone``, an IANA name the caller
    checked): answers and the acceptance rate; hours without any are left out."""
    params = _params(flow_id, when, verdicts=list(VERDICT_TYPES), timezone=timezone)
    return query_table(conn, _BUYER_HOURS, params)
