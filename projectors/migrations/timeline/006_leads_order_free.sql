-- The leads row is a function of the set of its lead's events, whatever order they are
-- read in: a rebuild reads the topics in any order (the feedback topic before a buyer's),
-- so each column merges by its own rule (latest id, least, greatest, or). cost and revenue
-- are those of the lead's latest event that carries one; the id of that event is kept
-- beside them so a merge can tell which is newer.
ALTER TABLE leads ADD COLUMN cost_event_id text, ADD COLUMN revenue_event_id text;

-- Rows written before this migration may have lost facts (issue #14): recompute every
-- lead from its events. One pass over events (lead_id, id); on a big projection, run
-- it at a quiet time, like migration 005.
WITH folded AS (
    SELECT lead_id,
           (array_agg(flow_id ORDER BY id DESC))[1] AS flow_id,
           (array_agg(outcome ORDER BY id DESC))[1] AS status,
           max(id) AS last_event_id,
           (array_agg(type ORDER BY id DESC))[1] AS last_event_type,
           (array_agg(step_id ORDER BY id DESC))[1] AS last_step_id,
           (array_agg(cost ORDER BY id DESC) FILTER (WHERE cost IS NOT NULL))[1] AS cost,
           max(id) FILTER (WHERE cost IS NOT NULL) AS cost_event_id,
           (array_agg(revenue ORDER BY id DESC) FILTER (WHERE revenue IS NOT NULL))[1] AS revenue,
           max(id) FILTER (WHERE revenue IS NOT NULL) AS revenue_event_id,
           min(to_timestamp((end_timestamp - total_ms) / 1000.0)) AS submitted_at,
           max(ts) AS updated_at,
           bool_or(type = 'flow.completed') AS completed
    FROM events
    GROUP BY lead_id
)
UPDATE leads AS l SET
    flow_id = f.flow_id, status = f.status, last_event_id = f.last_event_id,
    last_event_type = f.last_event_type, last_step_id = f.last_step_id,
    cost = f.cost, cost_event_id = f.cost_event_id,
    revenue = f.revenue, revenue_event_id = f.revenue_event_id,
    submitted_at = f.submitted_at, updated_at = f.updated_at, completed = f.completed
FROM folded AS f
WHERE f.lead_id = l.lead_id;
