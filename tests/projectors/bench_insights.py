"""The analytics projection's cost: ``python -m tests.projectors.bench_insights``.

Times the analytics batch write (``write_batch`` with the analytics projection: every
table of analytics migrations 001-004) for N events of fresh leads, and then the insights
queries over a flow of L generated leads spread over the last 7 days (lead, enhancement and
delivery rows, their hourly rollup as the projection would hold it), for a day and a week:
the lead answers read ``hourly_lead_outcomes``, not the leads.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from engine.logs import configure_logging
from engine.settings import Settings
from projectors.analytics import ANALYTICS
from projectors.batch import Record, build_batch
from projectors.generations import current, migrate
from projectors.insights import enhancement_value, source_performance, step_performance
from projectors.params import TimeRange
from projectors.store import Connection, connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events

CODEC = EventCodec()

_GENERATE = [
    """INSERT INTO lead_facts SELECT 'f', 'L' || n, now() - n * interval '7 days' / %(n)s,
       'src' || (n %% 20), true, n %% 5 <> 0, n %% 3 = 0, 1.5 FROM generate_series(1, %(n)s) n""",
    """INSERT INTO lead_enhancements SELECT 'f', 'L' || n, 'check' || (n %% 2),
       now() - n * interval '7 days' / %(n)s, n %% 4 <> 0, 1, 0.01
       FROM generate_series(1, %(n)s) n WHERE n %% 5 <> 0""",
    """INSERT INTO delivery_facts SELECT 'f', 'D' || n, 'L' || n, 'buyer' || (n %% 3),
       now() - n * interval '7 days' / %(n)s, 20, n %% 10 = 0, NULL
       FROM generate_series(1, %(n)s) n WHERE n %% 3 = 0""",
    # What the projection's per-batch differences add up to, in one statement.
    """INSERT INTO hourly_lead_outcomes
       SELECT l.flow_id, date_trunc('hour', l.submitted_at, 'UTC'), l.source_id, l.submitted,
              l.accepted, l.delivered, coalesce(e.steps, ''), count(*), sum(l.cost),
              sum(coalesce(e.cost, 0)), sum(coalesce(d.revenue, 0))
       FROM lead_facts l
       LEFT JOIN (SELECT lead_id, sum(cost) AS cost,
                         string_agg(step_id, ',' ORDER BY step_id) FILTER (WHERE succeeded) AS steps
                  FROM lead_enhancements GROUP BY 1) e USING (lead_id)
       LEFT JOIN (SELECT lead_id, sum(revenue) FILTER (WHERE NOT returned) AS revenue
                  FROM delivery_facts GROUP BY 1) d USING (lead_id)
       WHERE l.flow_id = 'f'
       GROUP BY 1, 2, 3, 4, 5, 6, 7""",
    """INSERT INTO hourly_step_stats
       SELECT 'f', h, 'check' || k, 'enhancement.success', 'success', 100, 100, 1, 100, 100, 1, 1
       FROM generate_series(date_trunc('hour', now() - interval '7 days'), now(),
                            interval '1 hour') h, generate_series(0, 1) k""",
]


def bench_writes(conn: Connection, flow_id: str, events: int, batch_size: int) -> None:
    rows = [e for _ in range(events // 5) for e in make_lead_events(flow_id=flow_id)]
    records = [
        Record("t", 0, i, CODEC.encode(e), e["lead_id"].encode()) for i, e in enumerate(rows)
    ]
    batches = [
        build_batch(CODEC, records[i : i + batch_size]) for i in range(0, len(rows), batch_size)
    ]
    started = time.perf_counter()
    for batch in batches:
        write_batch(conn, "analytics", batch, projection=ANALYTICS)
    took = time.perf_counter() - started
    print(f"write: {len(rows)} events in batches of {batch_size}: {len(rows) / took:,.0f} events/s")


def bench_queries(conn: Connection, serving: str, leads: int) -> None:
    generation = current(conn, serving, "analytics", "active")
    assert generation is not None
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(generation.schema)))
    for statement in _GENERATE:
        conn.execute(statement, {"n": leads})
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(serving)))
    now = datetime.now(UTC)
    for days in (1, 7):
        when = TimeRange(now - timedelta(days=days), now)
        for query in (source_performance, enhancement_value, step_performance):
            started = time.perf_counter()
            query(conn, "f", when)
            took = (time.perf_counter() - started) * 1000
            print(f"{days} day(s) of {leads:,} leads a week: {query.__name__} {took:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--leads", type=int, default=700_000)
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    schema = "bench" + uuid.uuid4().hex[:10]
    settings = Settings(db_schema=schema)
    url = settings.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        with connect(settings) as conn:
            migrate(conn, schema)
            bench_writes(conn, schema, args.events, args.batch_size)
            bench_queries(conn, schema, args.leads)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (schema + "%",)
            ).fetchall():
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
