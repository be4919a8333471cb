"""The UI stays fast on a big projection: every query its pages run walks an index, pages
are LIMITed keyset reads, and a lead's page costs the same number of queries whatever its
number of events.

A million leads would not fit in ``make test``; instead a projection of
``LEADS`` generated leads (``generate_series``, in a schema of the test's own, spread over 90
days, analysed) is read through the UI's own API routes, every statement they send is
captured, and Postgres' plan for each (``EXPLAIN``) must not scan ``events`` or ``leads``
sequentially. The planner picks a sequential scan as soon as a query has to read a large
share of a table, so these plans are what a flow ten times larger would get as well.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engine.api.app import create_app
from engine.ids import id_timestamp_ms, is_valid_id
from engine.retention import partition_of
from engine.settings import Settings
from engine.state.postgres import migrate_state
from engine.ui import dashboard
from projectors.generations import current, migrate
from projectors.store import connect
from tests.conftest import _drop_schemas_of
from tests.engine.ui.conftest import PII_KEY, UiStack, ui_keys
from tests.keys import admin_client

pytestmark = pytest.mark.stack

LEADS = 60_000
FLOW = "big"
# One lead in ten is another flow's, one in fifty fails the filter.
_GENERATE_EVENTS = """
INSERT INTO events (id, lead_id, flow_id, flow_version, step_id, step_name, type, outcome,
                    reason, ts, start_timestamp, end_timestamp, ms, wait_ms, overhead_ms,
                    lag_ms, total_ms, step_count, host, handler_version, version, expires_at,
                    snapshot, kafka_topic, kafka_partition, kafka_offset)
SELECT event_id, lead_id, flow,
       1, step, step, type, outcome, reason, at, 0, 0, 3, 0, 3, 0, 10 * pos, pos, 'gen', '0',
       '2', at + interval '90 days',
       jsonb_build_object('id', event_id, 'lead_id', lead_id, 'flow_id', flow, 'type', type,
           'outcome', outcome, 'reason', reason, 'step_id', step,
           'vars', jsonb_build_object('lead.email', 'lead' || n || '@example.com',
                                      'lead.phone_1', (5120000000 + n)::text,
                                      'lead.first_name', 'Lead ' || n, 'step', pos)),
       'gen', 0, n * 4 + pos
FROM (SELECT n, CASE WHEN n %% 10 = 0 THEN 'other' ELSE %(flow)s END AS flow,
             now() - (n * interval '90 days' / %(leads)s) AS submitted
      FROM generate_series(1, %(leads)s) n) l
-- Ids start with the submission time in ms, as engine.ids makes them (10 Crockford digits).
CROSS JOIN LATERAL (
    SELECT string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ',
                             ((floor(extract(epoch FROM submitted) * 1000)::bigint
                               >> (5 * (9 - i))) & 31)::int + 1, 1), '' ORDER BY i) AS prefix
    FROM generate_series(0, 9) i) p
CROSS JOIN LATERAL (VALUES
    (0, 'source', 'source.submitted', 'success', NULL),
    (1, 'source', 'source.accepted', 'success', NULL),
    (2, 'area', CASE WHEN n %% 50 = 0 THEN 'filter.failed' ELSE 'filter.passed' END,
        CASE WHEN n %% 50 = 0 THEN 'failure' ELSE 'success' END,
        CASE WHEN n %% 50 = 0 THEN 'Service area: lead.state is ''WY''' END),
    (3, 'buyer', 'flow.completed', 'success', NULL)
) s(pos, step, type, outcome, reason)
CROSS JOIN LATERAL (SELECT submitted + pos * interval '10 ms' AS at,
                           prefix || lpad(n::text, 14, '0') || lpad(pos::text, 2, '0')
                               AS event_id,
                           prefix || lpad(n::text, 16, '0') AS lead_id) t
"""
_GENERATE_LEADS = """
INSERT INTO leads (lead_id, flow_id, status, last_event_id, last_event_type, last_step_id,
                   submitted_at, updated_at, completed)
SELECT lead_id, flow_id, outcome, id, type, step_id, ts, ts, true
FROM events WHERE type = 'flow.completed'
"""
# The analytics projection's per-day aggregate of the same events (projectors/analytics.py).
_GENERATE_DAILY = """
INSERT INTO {daily} (flow_id, day, step_id, type, outcome, entity_id, reason, events, ms_total,
                     ms_max, cost, revenue)
SELECT flow_id, (ts AT TIME ZONE 'UTC')::date, step_id, type, outcome, coalesce(entity_id, ''),
       coalesce(reason, ''), count(*), sum(ms), max(ms), coalesce(sum(cost::numeric), 0),
       coalesce(sum(revenue::numeric), 0)
FROM events GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


@dataclass(frozen=True)
class Statement:
    query: Any
    params: Any
    options: str  # the connection's: its search_path names the schema
    thread: str

    @property
    def text(self) -> str:
        return self.query if isinstance(self.query, str) else self.query.as_string(None)


@pytest.fixture(scope="module")
def big_settings(stack: Settings, _ui_env: None) -> Iterator[Settings]:
    """A projection of ``LEADS`` generated leads (four events each), analysed."""
    schema = "tqp" + uuid.uuid4().hex[:9]
    settings = stack.model_copy(update={"db_schema": schema, "ui_keys": ui_keys()})
    url = stack.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        # The API reads the engine's state too (a sealed lead's erasure marker).
        migrate_state(settings)
        with connect(settings) as conn:
            migrate(conn, schema)
            timeline = current(conn, schema, "timeline", "active")
            assert timeline is not None
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(timeline.schema)))
            # events is partitioned by day: the generated 90 days need their partitions
            # (the projector makes a batch's own; a raw INSERT asks for them first).
            conn.execute(
                "SELECT ensure_event_partitions(ARRAY(SELECT generate_series("
                "(now() AT TIME ZONE 'UTC')::date - 91, (now() AT TIME ZONE 'UTC')::date,"
                " interval '1 day')::date))"
            )
            conn.execute(_GENERATE_EVENTS, {"flow": FLOW, "leads": LEADS})
            conn.execute(_GENERATE_LEADS)
            analytics = current(conn, schema, "analytics", "active")
            assert analytics is not None
            daily = sql.Identifier(analytics.schema, "daily_event_counts")
            conn.execute(sql.SQL(_GENERATE_DAILY).format(daily=daily))
            conn.commit()
            conn.execute("ANALYZE events")
            conn.execute("ANALYZE leads")
            conn.execute(sql.SQL("ANALYZE {}").format(daily))
            conn.commit()
            _learn_partitions(conn, timeline.schema)
        yield settings
    finally:
        _drop_schemas_of(settings, schema)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Statement]:
    """Every statement sent through psycopg while the test runs (the API's included)."""
    sent: list[Statement] = []
    original: Callable[..., Any] = psycopg.Cursor.execute

    def execute(self: psycopg.Cursor[Any], query: Any, params: Any = None, **kw: Any) -> Any:
        options = self.connection.info.get_parameters().get("options", "")
        sent.append(Statement(query, params, options, threading.current_thread().name))
        return original(self, query, params, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    return sent


def _reads(sent: list[Statement], schema: str) -> list[Statement]:
    """The reads that request handlers sent to ``schema``. Requests run on anyio's worker
    threads; the session's own projector, steps and export worker (named threads) poll the
    same schema meanwhile, and are not what a page costs."""
    return [
        s
        for s in sent
        # The API's pooled connections set their statement timeout in the options too.
        if s.options.split()[:2] == ["-c", f"search_path={schema}"]
        and s.thread.startswith("AnyIO worker thread")
        and s.text.lstrip(" \n(").upper().startswith(("SELECT", "WITH"))
    ]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _lead_and_event(settings: Settings, n: int) -> tuple[str, str]:
    """Lead ``n``'s id and the id of its filter event (generated ids start with a time)."""
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT lead_id, id FROM events WHERE kafka_topic = 'gen' AND kafka_offset = %s",
            (n * 4 + 2,),
        ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _plan(settings: Settings, statement: Statement, analyze: bool = False) -> dict[str, Any]:
    query = sql.SQL(statement.query) if isinstance(statement.query, str) else statement.query
    explain = sql.SQL(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}" if analyze else "EXPLAIN (FORMAT JSON) {}"
    )
    with connect(settings) as conn:
        row = conn.execute(explain.format(query), statement.params)
        found = row.fetchone()
    assert found is not None
    plan: dict[str, Any] = found[0][0]["Plan"]
    return plan


# events is partitioned by day (timeline migration 007): a plan names each partition it
# reads and each partition's own index. Learnt once the projection is generated: which
# partitions are empty (the days ahead: a sequential scan of nothing is the right plan)
# and which index of events each partition's index is.
_EMPTY_PARTITIONS: set[str] = set()
_PARENT_INDEX: dict[str, str] = {}
_PARTITION_ROWS: dict[str, float] = {}
_PARTITION_PAGES: dict[str, int] = {}
# A partition this small is read whole more cheaply than through an index (the planner's
# random_page_cost is 4): the oldest day, whose data starts at the time of day the test runs
# (8 pages at 23:05 UTC; CI at 22:50 saw its phone search plan a sequential scan there),
# and today's just after midnight. A full day of the generated flow is ~2,700 events, 191
# pages: a sequential scan of it is still a failure.
_SMALL_PARTITION_PAGES = 16


def _learn_partitions(conn: Any, schema: str) -> None:
    rows = conn.execute(
        "SELECT c.relname, c.relkind, p.relname, c.reltuples, c.relpages FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
        (schema,),
    ).fetchall()
    for name, kind, parent, tuples, pages in rows:
        if kind == "i":
            _PARENT_INDEX[name] = parent
        else:
            _PARTITION_ROWS[name] = float(tuples)
            _PARTITION_PAGES[name] = int(pages)
            if tuples <= 0:
                _EMPTY_PARTITIONS.add(name)


def _read_whole_rightly(relation: str | None) -> bool:
    """A partition the planner rightly reads whole, if it plans a read of it at all: empty
    (the days ahead) or a few pages (``_SMALL_PARTITION_PAGES``)."""
    name = str(relation)
    return name in _EMPTY_PARTITIONS or (
        name in _PARTITION_PAGES and _PARTITION_PAGES[name] <= _SMALL_PARTITION_PAGES
    )


def _events_or_leads(relation: str | None) -> bool:
    """``events`` (or one of its daily partitions) or ``leads``."""
    return relation in ("events", "leads") or partition_of(relation or "") is not None


def _time_range(statement: Statement | None) -> tuple[datetime, datetime] | None:
    """The range of times a statement reads (its earliest and latest time parameters, an
    id's being the time in its first 48 bits: a range of ids is a range of times), if it
    has two or more."""
    params = statement.params if statement is not None else None
    values = params.values() if isinstance(params, dict) else (params or ())
    times = [v for v in values if isinstance(v, datetime)] + [
        datetime.fromtimestamp(id_timestamp_ms(v) / 1000, UTC)
        for v in values
        if isinstance(v, str) and is_valid_id(v)
    ]
    return (min(times), max(times)) if len(times) >= 2 else None


def _pruned_to_its_days(node: dict[str, Any], statement: Statement | None) -> bool:
    """A scan of a partition that is empty or a few pages (read whole, it is cheaper than
    an index), or of a day a time-range read covers: partition pruning has already cut the
    read to the range's days, and reading a day of the range in full is the planner's right
    choice (a week's events of one type are a quarter of each day) at any size. Reads by id
    or lead (no range) must still use an index."""
    name = str(node.get("Relation Name"))
    day = partition_of(name)
    if day is None:
        return False
    if _PARTITION_ROWS.get(name, 0) <= 0 or _read_whole_rightly(name):
        return True
    span = _time_range(statement)
    return span is not None and day.start < span[1] and day.end > span[0]


def _seq_scans(plan: dict[str, Any], statement: Statement | None = None) -> list[str]:
    return [
        str(node.get("Relation Name"))
        for node in _nodes(plan)
        if node["Node Type"] == "Seq Scan"
        and _events_or_leads(node.get("Relation Name"))
        and not _pruned_to_its_days(node, statement)
    ]


def _page_reads(settings: Settings, captured: list[Statement]) -> dict[str, list[Statement]]:
    """What each page asks the API for, and the statements each request sent."""
    client = admin_client(create_app(settings))
    headers = {"Authorization": f"Bearer {PII_KEY}"}
    n = LEADS // 2 + 1  # a lead of the big flow, half-way back in time
    lead, event = _lead_and_event(settings, n)
    requests = {
        "flows": ("GET", "/ui/api/flows", None),
        "find by email": ("POST", "/ui/api/leads/search", {"q": f"lead{n}@example.com"}),
        "find by phone": ("POST", "/ui/api/leads/search", {"q": str(5120000000 + n)}),
        "find by id": ("POST", "/ui/api/leads/search", {"q": lead}),
        "browse": ("GET", f"/ui/api/flows/{FLOW}/leads", None),
        "browse failed": ("GET", f"/ui/api/flows/{FLOW}/leads?type=filter.failed", None),
        "browse older": ("GET", f"/ui/api/flows/{FLOW}/leads?before_id={event}", None),
        "timeline": ("GET", f"/ui/api/leads/{lead}", None),
        "timeline on": ("GET", f"/ui/api/leads/{lead}?after_id={event}&limit=1", None),
        "event": ("GET", f"/ui/api/events/{event}", None),
        "diff": ("GET", f"/ui/api/leads/{lead}/diff?to={event}", None),
        "dashboard": ("GET", f"/ui/api/flows/{FLOW}/dashboard", None),
    }
    reads: dict[str, list[Statement]] = {}
    for name, (method, path, body) in requests.items():
        captured.clear()
        answer = client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 200, (name, answer.text)
        reads[name] = _reads(captured, settings.db_schema)
        assert reads[name], f"{name}: no query captured"
    return reads


def _get_reads(settings: Settings, captured: list[Statement], path: str) -> list[Statement]:
    """The statements one GET of the UI's API sent."""
    client = admin_client(create_app(settings))
    captured.clear()
    answer = client.get(path, headers={"Authorization": f"Bearer {PII_KEY}"})
    assert answer.status_code == 200, answer.text
    reads = _reads(captured, settings.db_schema)
    captured.clear()
    return reads


def _scans(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    """The plan's scans of ``relation`` (of ``events``: of any of its partitions)."""
    return [
        node
        for node in _nodes(plan)
        if node.get("Relation Name") == relation
        or (relation == "events" and partition_of(str(node.get("Relation Name"))) is not None)
    ]


def _index_names(plan: dict[str, Any]) -> set[str]:
    """The indexes the plan reads, a partition's index named as the index of events it is."""
    return {
        _PARENT_INDEX.get(str(node["Index Name"]), str(node["Index Name"]))
        for node in _nodes(plan)
        if "Index Name" in node
    }


def _rows_read(plan: dict[str, Any], relation: str = "events") -> int:
    """Rows of ``relation`` an analysed plan fetched, kept or filtered out, over all loops."""
    return sum(
        round(
            (
                node.get("Actual Rows", 0)
                + node.get("Rows Removed by Filter", 0)
                + node.get("Rows Removed by Index Recheck", 0)
            )
            * node.get("Actual Loops", 1)
        )
        for node in _scans(plan, relation)
    )


def test_a_rare_type_is_browsed_on_its_own_index(
    big_settings: Settings, captured: list[Statement]
) -> None:
    """filter.failed is one event in 200: its page reads that type's index entries alone,
    newest first, instead of walking every type's events (flow_id, ts) backwards."""
    _, event = _lead_and_event(big_settings, LEADS // 2 + 50)  # n % 50 == 0: filter.failed
    for path in (
        f"/ui/api/flows/{FLOW}/leads?type=filter.failed",
        f"/ui/api/flows/{FLOW}/leads?type=filter.failed&before_id={event}",
    ):
        (browse,) = [
            s for s in _get_reads(big_settings, captured, path) if "e.type = %(type)s" in s.text
        ]
        plan = _plan(big_settings, browse, analyze=True)
        assert plan["Node Type"] == "Limit", path
        indexes = _index_names(plan)
        assert "events_flow_id_type_ts_id" in indexes, (path, indexes)
        assert "events_flow_id_ts" not in indexes, (path, indexes)
        # The page's scan (the cursor's own event is one lookup by primary key).
        # (Per partition, newest first: the LIMIT stops the walk once the page is full.)
        scans = [
            n
            for n in _scans(plan, "events")
            if _PARENT_INDEX.get(str(n.get("Index Name")), n.get("Index Name")) != "events_pkey"
            and not _read_whole_rightly(n.get("Relation Name"))
        ]
        assert {_PARENT_INDEX.get(str(n.get("Index Name"))) for n in scans} == {
            "events_flow_id_type_ts_id"
        }, path
        # Every row it read is a row of the page (51: a page and one to tell there is more).
        assert sum(n.get("Rows Removed by Filter", 0) for n in scans) == 0, path
        assert sum(n.get("Actual Rows", 0) for n in scans) <= 51, path


def test_the_dashboard_reads_whole_days_from_the_daily_aggregate(
    big_settings: Settings, captured: list[Statement]
) -> None:
    """Sixty days (noon to noon) cost the aggregate's rows for 59 whole days, the events of
    the two half days at the edges, and a LIMITed sample of durations: never the events of
    the 60 days. The sources panel is one statement, one pass over an index."""
    end = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(1)
    start = end - timedelta(days=60)
    when = f"start={start:%Y-%m-%dT%H:%M:%SZ}&end={end:%Y-%m-%dT%H:%M:%SZ}"
    reads = _get_reads(big_settings, captured, f"/ui/api/flows/{FLOW}/dashboard?{when}")
    by_query = {
        name: [s for s in reads if s.query is query]
        for name, query in (
            ("outcomes", dashboard._OUTCOMES),
            ("reasons", dashboard._REASONS),
            ("steps", dashboard._STEPS),
            ("sources", dashboard._SOURCES),
        )
    }
    assert {name: len(found) for name, found in by_query.items()} == dict.fromkeys(by_query, 1)
    assert len(reads) == 5, [s.text[:80] for s in reads]  # and the recipients'
    first, last = start.date() + timedelta(1), end.date()
    with connect(big_settings) as conn:
        edge_row, range_row = conn.execute(
            "SELECT count(*) FILTER (WHERE ts < %(first)s OR ts >= %(last)s), count(*)"
            " FROM events WHERE flow_id = %(flow)s AND ts >= %(start)s AND ts < %(end)s",
            {"flow": FLOW, "start": start, "end": end, "first": first, "last": last},
        ).fetchone() or (0, 0)
    # The edges' days are partitions of events, read whole where a half day is most of one.
    with connect(big_settings) as conn:
        edge_days = conn.execute(
            "SELECT count(*) FROM events WHERE (ts >= %(d0)s AND ts < %(first)s)"
            " OR (ts >= %(last)s AND ts < %(d1)s)",
            {"d0": start.date(), "first": first, "last": last, "d1": end.date() + timedelta(1)},
        ).fetchone() or (0,)
    edge_row = max(edge_row, edge_days[0])
    bound = edge_row + 2 * dashboard.DURATION_SAMPLE  # decisions are half the events
    assert range_row > 4 * bound, "the range should hold far more events than the bound"
    for name in ("outcomes", "reasons", "steps"):
        (statement,) = by_query[name]
        plan = _plan(big_settings, statement, analyze=True)
        assert _scans(plan, "daily_event_counts"), name
        limit = edge_row + (2 * dashboard.DURATION_SAMPLE if name == "steps" else 0)
        assert _rows_read(plan) <= limit, (name, _rows_read(plan), limit)
    # The sources of the default week (sixty of ninety days is most of the table, where a
    # sequential scan is the right plan; a big flow's week is not).
    week = _get_reads(big_settings, captured, f"/ui/api/flows/{FLOW}/dashboard")
    (sources,) = [s for s in week if s.query is dashboard._SOURCES]
    plan = _plan(big_settings, sources, analyze=True)
    # A range of ids: events (flow_id, id), or the primary key when the flow is most of it.
    assert _index_names(plan) & {"events_flow_id_id", "events_pkey"}, _index_names(plan)
    # One pass: no index probe per lead (a nested loop would show loops > 1).
    # (One scan per partition the range covers, each once.)
    assert {n.get("Actual Loops") for n in _scans(plan, "events")} == {1}, plan


def test_every_page_query_is_index_driven(
    big_settings: Settings, captured: list[Statement]
) -> None:
    reads = _page_reads(big_settings, captured)
    captured.clear()
    scans = {
        f"{name} #{i}": found
        for name, statements in reads.items()
        for i, statement in enumerate(statements)
        if (found := _seq_scans(_plan(big_settings, statement), statement))
    }
    assert scans == {}, f"sequential scans of events/leads: {scans}"


def test_lists_are_limited_keyset_reads(big_settings: Settings, captured: list[Statement]) -> None:
    """A list reads at most a page (a LIMIT at the top of its plan) and pages on by a key,
    never by an OFFSET that would read every row before it."""
    reads = _page_reads(big_settings, captured)
    captured.clear()
    for name in ("flows", "find by email", "browse", "browse older", "timeline", "timeline on"):
        limited = [s for s in reads[name] if "LIMIT" in s.text.upper()]
        assert limited, f"{name}: no LIMITed read"
        for statement in limited:
            assert "OFFSET" not in statement.text.upper(), name
            assert _plan(big_settings, statement)["Node Type"] == "Limit", name


def test_a_leads_page_costs_the_same_queries_however_long_its_timeline(
    ui_stack: UiStack, captured: list[Statement]
) -> None:
    """No query per event: a lead of 5 events and one of 323 take the same statements."""
    client = admin_client(create_app(ui_stack.settings))
    headers = {"Authorization": f"Bearer {PII_KEY}"}

    def statements(path: str) -> int:
        captured.clear()
        assert client.get(path, headers=headers).status_code == 200
        return len(_reads(captured, ui_stack.settings.db_schema))

    short, long = ui_stack.good, ui_stack.long
    assert len(long.events) >= 300
    assert statements(f"/ui/api/leads/{short.lead_id}") == statements(
        f"/ui/api/leads/{long.lead_id}"
    )
    assert statements(
        f"/ui/api/leads/{short.lead_id}/diff?from={short.events[0]['id']}"
        f"&to={short.events[-1]['id']}"
    ) == statements(
        f"/ui/api/leads/{long.lead_id}/diff?from={long.events[0]['id']}&to={long.events[-1]['id']}"
    )
