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
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from engine.api.app import create_app
from engine.settings import Settings
from projectors.generations import current, migrate
from projectors.store import connect
from tests.conftest import _drop_schemas_of
from tests.engine.ui.conftest import PII_KEY, UiStack, ui_keys

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
CROSS JOIN LATERAL (VALUES
    (0, 'source', 'source.submitted', 'success', NULL),
    (1, 'source', 'source.accepted', 'success', NULL),
    (2, 'area', CASE WHEN n %% 50 = 0 THEN 'filter.failed' ELSE 'filter.passed' END,
        CASE WHEN n %% 50 = 0 THEN 'failure' ELSE 'success' END,
        CASE WHEN n %% 50 = 0 THEN 'Service area: lead.state is ''WY''' END),
    (3, 'buyer', 'flow.completed', 'success', NULL)
) s(pos, step, type, outcome, reason)
CROSS JOIN LATERAL (SELECT submitted + pos * interval '10 ms' AS at,
                           lpad(n::text, 24, '0') || lpad(pos::text, 2, '0') AS event_id,
                           lpad(n::text, 26, '0') AS lead_id) t
"""
_GENERATE_LEADS = """
INSERT INTO leads (lead_id, flow_id, status, last_event_id, last_event_type, last_step_id,
                   submitted_at, updated_at, completed)
SELECT lead_id, flow_id, outcome, id, type, step_id, ts, ts, true
FROM events WHERE type = 'flow.completed'
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
        with connect(settings) as conn:
            migrate(conn, schema)
            timeline = current(conn, schema, "timeline", "active")
            assert timeline is not None
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(timeline.schema)))
            conn.execute(_GENERATE_EVENTS, {"flow": FLOW, "leads": LEADS})
            conn.execute(_GENERATE_LEADS)
            conn.commit()
            conn.execute("ANALYZE events")
            conn.execute("ANALYZE leads")
            conn.commit()
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
        if s.options == f"-c search_path={schema}"
        and s.thread.startswith("AnyIO worker thread")
        and s.text.lstrip(" \n(").upper().startswith(("SELECT", "WITH"))
    ]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _plan(settings: Settings, statement: Statement) -> dict[str, Any]:
    query = sql.SQL(statement.query) if isinstance(statement.query, str) else statement.query
    with connect(settings) as conn:
        row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), statement.params)
        found = row.fetchone()
    assert found is not None
    plan: dict[str, Any] = found[0][0]["Plan"]
    return plan


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    return [
        str(node.get("Relation Name"))
        for node in _nodes(plan)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in ("events", "leads")
    ]


def _page_reads(settings: Settings, captured: list[Statement]) -> dict[str, list[Statement]]:
    """What each page asks the API for, and the statements each request sent."""
    client = TestClient(create_app(settings))
    headers = {"Authorization": f"Bearer {PII_KEY}"}
    n = LEADS // 2 + 1  # a lead of the big flow, half-way back in time
    lead, event = f"{n:026d}", f"{n:024d}02"
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


def test_every_page_query_is_index_driven(
    big_settings: Settings, captured: list[Statement]
) -> None:
    reads = _page_reads(big_settings, captured)
    captured.clear()
    scans = {
        f"{name} #{i}": found
        for name, statements in reads.items()
        for i, statement in enumerate(statements)
        if (found := _seq_scans(_plan(big_settings, statement)))
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
    client = TestClient(create_app(ui_stack.settings))
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
