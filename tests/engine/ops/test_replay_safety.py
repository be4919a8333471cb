"""Replaying a step's input re-emits the same event ids: downstream nothing is duplicated."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg
import pytest

from engine.demo.buyer import BuyerServer
from engine.ops.offsets import GroupActiveError, apply_reset, plan_reset
from engine.ops.submit import publish_leads
from engine.runtime.step_worker import prepare_topics, step_group
from engine.settings import Settings
from projectors.generations import migrate_database
from projectors.projector import TimelineProjector
from projectors.store import connect
from tests.factories import make_flow
from tests.kafka_helpers import read_events, run_steps
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

LEAD = {
    "first_name": "A",
    "last_name": "B",
    "phone_1": "5125550123",
    "state": "TX",
    "tcpa_consent": True,
}


def count(events: list[dict[str, object]], type_: str) -> int:
    return sum(e["type"] == type_ for e in events)


def test_replaying_a_steps_input_duplicates_nothing_downstream(
    stack: Settings, unique_id: str, buyer: BuyerServer
) -> None:
    settings = stack.model_copy(update={"db_schema": unique_id})
    migrate_database(settings)
    flow = make_flow(unique_id, buyer.url)
    prepare_topics(stack, flow)
    projector_stop = threading.Event()
    projector = TimelineProjector(settings, rf"^leadflow\.{unique_id}\.events\..+$", unique_id)
    projector_thread = threading.Thread(target=projector.run, args=(projector_stop,), daemon=True)
    projector_thread.start()
    try:
        stop = threading.Event()
        threads = run_steps(stack, flow, stop)
        ids = publish_leads(
            stack, flow.id, [{**LEAD, "email": f"r{i}@example.com"} for i in range(5)]
        )
        wait_until(
            lambda: count(read_events(stack, flow, 5), "flow.completed"),
            45,
            "the 5 leads to complete",
            until=lambda done: done == 5,
            every=0.5,
        )
        stop.set()
        for t in threads:
            t.join(30)
        with connect(settings) as conn:
            wait_until(
                lambda: conn.execute("SELECT count(*) FROM events").fetchone(),
                45,
                "their 25 events in the projection",
                until=lambda row: row == (25,),
                every=0.5,
            )
            before = conn.execute("SELECT id, type FROM events ORDER BY id").fetchall()

        # An operator replays the filter's input from the beginning.
        group = step_group(flow.id, "service-area")
        moves = plan_reset(stack, group, "earliest")
        assert moves and all(m.target == 0 for m in moves)

        def reset() -> bool:
            try:
                apply_reset(stack, group, moves)
            except GroupActiveError:
                return False
            return True

        # Static members linger until their session times out.
        wait_until(reset, 30, "the stopped steps to leave their group, to reset it", every=1)
        stop = threading.Event()
        threads = run_steps(stack, flow, stop)
        wait_until(
            lambda: count(read_events(stack, flow, 5), "filter.passed"),
            45,
            "10 filter.passed events after the replay",
            until=lambda found: found == 10,
            every=0.5,
        )
        wait_until(
            lambda: count(read_events(stack, flow, 5), "flow.completed"),
            45,
            "10 flow.completed events after the replay",
            until=lambda found: found == 10,
            every=0.5,
        )
        stop.set()
        for t in threads:
            t.join(30)
        topic_ids = Counter(e["id"] for e in read_events(stack, flow, 5))
        time.sleep(2)  # let the projector drain
        with connect(settings) as conn:
            after = conn.execute("SELECT id, type FROM events ORDER BY id").fetchall()
    finally:
        projector_stop.set()
        projector_thread.join(30)
        with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{unique_id}" CASCADE')

    # The replay re-recorded the filter's and the buyer's events, under the same ids...
    assert sorted(n for n in topic_ids.values() if n > 1) == [2] * 15
    # ...so the projection, keyed by id, holds each event once, exactly as before.
    assert after == before
    assert {lead for (lead,) in [(i,) for i in ids]} == set(ids)
