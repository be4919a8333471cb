"""Expiry of the timeline when flows keep their data for different times: the partitions
follow the longest retention, and a shorter one's old events and leads go by DELETE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projectors.expiry import expire_timeline
from projectors.generations import current
from projectors.partitions import held_partitions
from projectors.store import Connection
from tests.factories import make_flow, make_lead_events
from tests.projectors.exports.conftest import write_events

DAY = timedelta(days=1)


def at_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@pytest.mark.stack
def test_a_flow_kept_shorter_than_the_partitions_loses_its_old_rows_by_delete(
    db: Connection, pg_schema: str
) -> None:
    now = datetime.now(UTC)
    short = make_flow(f"{pg_schema}s", "http://127.0.0.1:9/x").model_copy(
        update={"retention_days": 1}
    )
    long = make_flow(f"{pg_schema}l", "http://127.0.0.1:9/x")  # 90 days
    short_old = make_lead_events(short.id, submitted_ms=at_ms(now - 3 * DAY))
    short_new = make_lead_events(short.id, submitted_ms=at_ms(now - timedelta(minutes=5)))
    long_old = make_lead_events(long.id, submitted_ms=at_ms(now - 3 * DAY))
    write_events(db, [*short_old, *short_new, *long_old])
    timeline = current(db, pg_schema, "timeline", "active")
    assert timeline is not None
    schema = timeline.schema
    before = {h.partition for h in held_partitions(db, schema)}

    dry = expire_timeline(db, pg_schema, [short, long], now, dry_run=True)
    figures = {h.item: (h.held, h.expired, h.removed) for h in dry}
    assert figures[f"events of flow {short.id}"] == (10, 5, 0)
    assert figures[f"leads of flow {short.id}"] == (2, 1, 0)
    assert all(h.expired == 0 for h in dry if h.item.startswith("partition"))

    done = expire_timeline(db, pg_schema, [short, long], now, dry_run=False)
    assert {h.item: h.removed for h in done if h.removed} == {
        f"events of flow {short.id}": 5,
        f"leads of flow {short.id}": 1,
    }
    assert {h.partition for h in held_partitions(db, schema)} == before
    left = db.execute("SELECT DISTINCT lead_id FROM events ORDER BY 1").fetchall()
    assert {r[0] for r in left} == {short_new[0]["lead_id"], long_old[0]["lead_id"]}
    leads = db.execute("SELECT lead_id FROM leads").fetchall()
    assert {r[0] for r in leads} == {short_new[0]["lead_id"], long_old[0]["lead_id"]}
