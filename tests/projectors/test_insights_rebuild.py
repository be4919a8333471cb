"""A small run through Kafka: the live analytics projector, then a blue/green rebuild of the
analytics projection from the topics, which must hold exactly the live generation's rows
(every table of analytics migrations 001-004) and answer the insights routes the same."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from fastapi import FastAPI
from psycopg import sql

from engine.runtime.kafka.config import admin_config
from engine.settings import Settings
from engine.topics import events_topic
from projectors.generations import current, migrate
from projectors.insights import buyer_behaviour, source_performance, step_performance
from projectors.insights_api import router as insights_router
from projectors.params import TimeRange
from projectors.projector import AnalyticsProjector, TimelineProjector
from projectors.replay import Rebuild
from projectors.stats import recipient_analytics, source_analytics, step_analytics
from projectors.store import Connection, connect
from tests.keys import admin_client
from tests.projectors.support import flow_pattern, produce, running
from tests.projectors.test_insights import STEPS, TABLES, every_event
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

ROUTES = ("steps", "rejections", "enhancements", "sources", "buyers", "buyer-hours")


@pytest.fixture
def main(stack: Settings, unique_id: str) -> Settings:
    return stack.model_copy(
        update={"db_schema": unique_id, "projector_pattern": flow_pattern(unique_id)}
    )


def publish(settings: Settings, flow_id: str) -> int:
    """The stories' events of ``flow_id``, each on its step's topic, as the engine writes them."""
    events = [e for e in every_event(flow_id) if e["flow_id"] == flow_id]
    admin = AdminClient(admin_config(settings))
    topics = {step: events_topic(flow_id, step) for step in STEPS}
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in topics.values()]).values():
        future.result(30)
    for step, topic in topics.items():
        produce(settings, topic, [e for e in events if e["step_id"] == step])
    return len(events)


def rows(conn: Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY {}").format(
                sql.Identifier(schema, table), sql.SQL(order)
            )
        ).fetchall()
        for table, order in TABLES
    }


def answers(settings: Settings, flow_id: str) -> dict[str, Any]:
    app = FastAPI()
    app.state.settings = settings
    app.include_router(insights_router)
    client = admin_client(app)
    got: dict[str, Any] = {}
    for route in ROUTES:
        answer = client.get(f"/flows/{flow_id}/insights/{route}")
        assert answer.status_code == 200, answer.text
        got[route] = answer.json()
        csv = client.get(f"/flows/{flow_id}/insights/{route}", params={"format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        got[f"{route}.csv"] = csv.text
    return got


def assert_agrees_with_the_events(conn: Connection, flow_id: str) -> None:
    """The projection's figures are the ones ``projectors.stats`` computes by scanning the
    timeline's events: two independent derivations of the same run."""
    always = TimeRange()
    outcomes = ("count", "success", "failure", "error", "ms_max")
    projected = {r["step_id"]: r for r in step_performance(conn, flow_id, always).rows}
    scanned = {r["step_id"]: r for r in step_analytics(conn, flow_id, always).rows}
    assert projected.keys() == scanned.keys()
    for step, row in scanned.items():
        assert [projected[step][k] for k in outcomes] == [row[k] for k in outcomes], step
    money = ("submitted", "accepted", "delivered", "cost", "revenue", "profit")
    by_source = {r["source_id"]: r for r in source_performance(conn, flow_id, always).rows}
    for row in source_analytics(conn, flow_id, always).rows:
        assert [by_source[row["source_id"]][k] for k in money] == [row[k] for k in money]
    [buyer] = recipient_analytics(conn, flow_id, always).rows
    [projected_buyer] = buyer_behaviour(conn, flow_id, always).rows
    assert (projected_buyer["returned"], projected_buyer["revenue"]) == (
        buyer["returned"], buyer["revenue"],
    )  # fmt: skip


def test_a_rebuild_recomputes_every_analytics_row_and_answer_exactly(
    main: Settings, unique_id: str
) -> None:
    with connect(main) as conn:
        migrate(conn, unique_id)
        total = publish(main, unique_id)
        live = current(conn, unique_id, "analytics", "active")
        assert live is not None
        pattern = main.projector_pattern
        with (
            running(AnalyticsProjector(main, pattern, batch_ms=50)),
            running(TimelineProjector(main, pattern, batch_ms=50)),
        ):
            wait_until(
                lambda: (
                    conn.execute("SELECT sum(events) FROM daily_event_counts").fetchone()
                    == (total,)
                ),
                60,
                "the live analytics projector to count every event",
            )
            wait_until(
                lambda: conn.execute("SELECT count(*) FROM events").fetchone() == (total,),
                60,
                "the timeline projector to store every event",
            )
        assert_agrees_with_the_events(conn, unique_id)
        built_live = rows(conn, live.schema)
        assert all(built_live.values()), "a table the stories should fill is empty"
        served_live = answers(main, unique_id)
        assert served_live["buyers"][0]["returned"] == 1
        assert served_live["enhancements"][0]["revenue_difference"] == 5.0

        result = Rebuild(main, "analytics", batch_size=4).run(threading.Event())

        assert result.switched and result.generation.schema != live.schema
        assert rows(conn, result.generation.schema) == built_live
        assert answers(main, unique_id) == served_live
