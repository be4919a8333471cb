"""``leadflow retention`` against the stack: a flow kept one day, data from three and two
days ago and from the last hour, then a dry run (nothing goes) and a run that removes
what expired in every store, with the queries still right for what remains."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import sql

from engine.api.intake_store import migrate_intake
from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.destination import open_store
from engine.ops.retention import retention_steps
from engine.retention import DayPartition, Holding, longest_retention_ms, partitions_to_make
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.topics import TopicSpec, ensure_topics, topic_retention
from engine.runtime.registry import apply_flow, delete_flow, read_flows
from engine.settings import Settings
from engine.state.postgres import connect as state_connect
from engine.state.postgres import migrate_state
from engine.topics import events_topic, flow_topics
from projectors.api import router as events_router
from projectors.exports.jobs import migrate_exports
from projectors.generations import current
from projectors.partitions import held_partitions
from projectors.projector import AnalyticsProjector, TimelineProjector
from projectors.stats_api import router as stats_router
from projectors.store import connect
from streamers.expiry import lifecycle_rule_id
from streamers.layout import event_key, time_event_key
from tests.factories import make_flow, make_lead_events
from tests.keys import admin_client
from tests.projectors.support import flow_pattern, produce, running
from tests.waiting import wait_until

DAY = timedelta(days=1)
DAY_MS = 86_400_000


@pytest.fixture
def retention_settings(stack: Settings, unique_id: str) -> Settings:
    """The test's own schema and feedback topic (the shared topics' retention is set)."""
    return stack.model_copy(
        update={"db_schema": unique_id, "feedback_topic": f"leadflow.{unique_id}.feedback"}
    )


@pytest.fixture
def applied(retention_settings: Settings, unique_id: str) -> Iterator[Flow]:
    """The flow, applied with a 2-day retention then changed to 1 day; removed after."""
    base = make_flow(unique_id, "http://127.0.0.1:9/leads")
    s3, azure = base.destinations
    flow = base.model_copy(
        update={
            "retention_days": 2,
            "destinations": [s3.model_copy(update={"layout": "time"}), azure],
        }
    )
    try:
        yield flow
    finally:
        delete_flow(retention_settings, unique_id)


def at_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def by_item(held: list[Holding], store: str) -> dict[str, Holding]:
    return {h.item: h for h in held if h.store.startswith(store)}


def run(settings: Settings, flow: Flow, now: datetime, *, execute: bool) -> list[Holding]:
    return [
        h for _, step in retention_steps(settings, [flow], now, execute=execute) for h in step()
    ]


@pytest.mark.stack
def test_topics_get_the_flow_retention_at_apply_and_follow_its_changes(
    retention_settings: Settings, applied: Flow
) -> None:
    settings, admin = retention_settings, new_admin(retention_settings)
    ensure_topics(admin, [TopicSpec(settings.feedback_topic, 1, 1)])

    assert apply_flow(settings, applied).type == "flow.created"
    assert set(topic_retention(admin, flow_topics(applied)).values()) == {2 * DAY_MS}

    shorter = applied.model_copy(update={"retention_days": 1})
    # The feedback topic is every flow's: it keeps the longest of them as the apply saw them.
    # Tests beside this one apply and delete flows in the same registry meanwhile (their
    # 90-day default among them), so it is read on both sides of the apply.
    before = [f for f in read_flows(settings) if f.id != applied.id]
    assert apply_flow(settings, shorter).type == "flow.updated"
    after = read_flows(settings)
    assert set(topic_retention(admin, flow_topics(applied)).values()) == {DAY_MS}
    kept = topic_retention(admin, [settings.feedback_topic])[settings.feedback_topic]
    assert kept in {longest_retention_ms([*before, shorter]), longest_retention_ms(after)}


@pytest.mark.stack
def test_expired_data_goes_from_every_store_and_what_remains_reads_right(
    retention_settings: Settings, applied: Flow, unique_id: str
) -> None:
    settings = retention_settings
    flow = apply_flow(settings, applied.model_copy(update={"retention_days": 1})).flow
    assert flow.retention_ms == DAY_MS
    now = datetime.now(UTC)
    old3, old2, fresh = (
        make_lead_events(unique_id, submitted_ms=at_ms(now - 3 * DAY)),
        make_lead_events(unique_id, submitted_ms=at_ms(now - 2 * DAY)),
        make_lead_events(unique_id, submitted_ms=at_ms(now - timedelta(hours=1))),
    )

    # The projections, through the projectors (which make partitions ahead and as needed).
    produce(settings, events_topic(unique_id, "source"), [*old3, *old2, *fresh])
    timeline = TimelineProjector(settings, flow_pattern(unique_id), name=f"{unique_id}-t")
    analytics = AnalyticsProjector(settings, flow_pattern(unique_id), name=f"{unique_id}-a")
    with running(timeline), running(analytics):
        for projector in (timeline, analytics):
            wait_until(
                lambda p=projector: p.stats.inserted,  # type: ignore[misc]
                60,
                f"{projector.name} to write 15 events",
                until=lambda n: n == 15,
            )

    migrate_state(settings)
    migrate_intake(settings)
    migrate_exports(settings)
    _seed_state(settings, unique_id, now)
    exports = _seed_exports(settings, unique_id, now)
    objects = _seed_objects(settings, flow, old3[0], fresh[0])
    client = _client(settings)

    with connect(settings) as conn:
        gen = _timeline_schema(conn, unique_id)
        made = {h.partition for h in held_partitions(conn, gen)}
    days = {DayPartition((now - n * DAY).date()) for n in (3, 2)}
    assert days | set(partitions_to_make(now)) <= made  # behind: for the batch; ahead: at start

    # A dry run: every figure, nothing removed.
    held = run(settings, flow, now, execute=False)
    parts = by_item(held, "timeline")
    gone = {d.name for d in days}
    assert {i for i, h in parts.items() if h.expired and i.startswith("partition")} == {
        f"partition {name}" for name in gone
    }
    assert all(parts[f"partition {name}"].expired == 5 for name in gone)
    assert parts["leads"].expired == 2
    state = by_item(held, "engine state")
    assert {t: h.expired for t, h in state.items()} == {
        "engine_cap_ledger": 1,
        "engine_cap_counters": 1,
        "engine_intake_pings": 1,
        "engine_intake_requests": 1,
        "engine_lead_fingerprints": 1,
    }
    assert by_item(held, "exports")["export files"].expired == 1
    assert [h.expired for h in held if h.item == "event objects"] == [1, 1]
    assert sum(h.removed for h in held) == 0
    assert len(_events(client, unique_id)) == 15

    # The run.
    held = run(settings, flow, now, execute=True)
    with connect(settings) as conn:
        left = {h.partition for h in held_partitions(conn, gen)}
    assert not left & days
    assert set(partitions_to_make(now)) <= left
    assert sorted(e["id"] for e in _events(client, unique_id)) == sorted(e["id"] for e in fresh)
    with connect(settings) as conn:
        leads = conn.execute("SELECT lead_id FROM leads").fetchall()
        rollup_days = conn.execute("SELECT DISTINCT day FROM daily_event_counts").fetchall()
    assert leads == [(fresh[0]["lead_id"],)]
    assert {d for (d,) in rollup_days} == {(now - timedelta(hours=1)).astimezone(UTC).date()}
    stats = client.get("/events/stats", params={"flow_id": unique_id, "group_by": "outcome"})
    assert stats.status_code == 200, stats.text
    assert sum(row["count"] for row in stats.json()) == 5
    assert client.get(f"/leads/{old3[0]['lead_id']}/events").status_code == 404
    assert len(client.get(f"/leads/{fresh[0]['lead_id']}/events").json()) == 5

    with state_connect(settings) as conn:
        for table in state:
            count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            assert conn.execute(count).fetchone() == (1,), table
    with connect(settings) as conn:
        assert conn.execute("SELECT object_key FROM export_jobs").fetchall() == [(exports[1],)]
    export_store = open_store(Destination(kind="s3", bucket=settings.export_bucket), settings)
    try:
        assert export_store.list_keys(f"{unique_id}-exports/") == [exports[1]]
    finally:
        export_store.close()
    for dest, (old_key, fresh_key) in objects:
        store = open_store(dest, settings)
        try:
            assert store.list_keys(f"{dest.prefix}/") == [fresh_key], dest.name
            assert old_key != fresh_key
        finally:
            store.close()
    assert sum(h.removed for h in held if h.store == "engine state") == 5
    s3 = next(d for d in flow.destinations if d.kind == "s3")
    assert _lifecycle_days(settings, lifecycle_rule_id(flow, s3)) == 1

    # Again: nothing left to remove.
    again = run(settings, flow, now, execute=True)
    assert sum(h.removed for h in again if h.store != "kafka") == 0


def _timeline_schema(conn: Any, serving: str) -> str:
    generation = current(conn, serving, "timeline", "active")
    assert generation is not None
    return generation.schema


def _client(settings: Settings) -> TestClient:
    app = FastAPI()
    app.state.settings = settings
    app.include_router(stats_router)
    app.include_router(events_router)
    return admin_client(app)


def _events(client: TestClient, flow_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/flows/{flow_id}/events", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def _seed_state(settings: Settings, flow_id: str, now: datetime) -> None:
    """One expired and one live row in each state table."""
    with state_connect(settings) as conn:
        for n, end in enumerate((now - 10 * DAY, now + DAY)):
            conn.execute(
                "INSERT INTO engine_cap_counters (cap_key, window_start, window_end, count)"
                " VALUES (%s, %s, %s, 1)",
                (f"cap{n}", end - DAY, end),
            )
            conn.execute(
                "INSERT INTO engine_cap_ledger (cap_key, window_start, lead_id)"
                " VALUES (%s, %s, %s)",
                (f"cap{n}", end - DAY, f"L{n}"),
            )
        for n, at in enumerate((now - 400 * DAY, now - timedelta(hours=1))):
            conn.execute(
                "INSERT INTO engine_lead_fingerprints (flow_id, fingerprint, submitted_ms, lead_id)"
                " VALUES (%s, %s, %s, %s)",
                (flow_id, bytes(32), at_ms(at), f"L{n}"),
            )
        for n, expires in enumerate((now - 2 * DAY, now + timedelta(minutes=5))):
            conn.execute(
                "INSERT INTO engine_intake_pings (ping_id, flow_id, source_id, expires_at)"
                " VALUES (%s, %s, 'source', %s)",
                (f"P{n}", flow_id, expires),
            )
        for n, created in enumerate((now - 3 * DAY, now)):
            conn.execute(
                "INSERT INTO engine_intake_requests"
                " (flow_id, source_id, idempotency_key, lead_id, body_sha256, created_at)"
                " VALUES (%s, 'source', %s, %s, %s, %s)",
                (flow_id, f"K{n}", f"L{n}", bytes(32), created),
            )


def _seed_exports(settings: Settings, unique: str, now: datetime) -> tuple[str, str]:
    """An export job three days old and one from now, each with its file."""
    keys = (f"{unique}-exports/old.jsonl.gz", f"{unique}-exports/new.jsonl.gz")
    store = open_store(Destination(kind="s3", bucket=settings.export_bucket), settings)
    try:
        with connect(settings) as conn:
            for key, created in zip(keys, (now - 3 * DAY, now), strict=True):
                store.put_if_absent(key, b"x", "application/gzip")
                conn.execute(
                    "INSERT INTO export_jobs (id, status, format, filters, store_kind, bucket,"
                    " object_key, created_at) VALUES (%s, 'complete', 'jsonl', '{}', 's3', %s,"
                    " %s, %s)",
                    (uuid.uuid4(), settings.export_bucket, key, created),
                )
    finally:
        store.close()
    return keys


def _seed_objects(
    settings: Settings, flow: Flow, old: dict[str, Any], fresh: dict[str, Any]
) -> list[tuple[Destination, tuple[str, str]]]:
    """One object of the old lead and one of the fresh lead in each destination, at the
    keys the streamer gives them (time layout on S3, lead layout on Azure)."""
    keys = []
    for dest in flow.destinations:

        def key(event: dict[str, Any], dest: Destination = dest) -> str:
            if dest.effective_layout == "time":
                at = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
                return time_event_key(dest.prefix, flow.id, at, event["lead_id"], event["id"])
            return event_key(dest.prefix, event["lead_id"], event["id"])

        store = open_store(dest, settings)
        try:
            for event in (old, fresh):
                store.put_if_absent(key(event), b"{}", "application/json")
        finally:
            store.close()
        keys.append((dest, (key(old), key(fresh))))
    return keys


def _lifecycle_days(settings: Settings, rule_id: str) -> int | None:
    """The expiration days of ``rule_id`` on the S3 bucket; the rule is removed after."""
    secret = settings.aws_secret_access_key
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
    )
    rules = s3.get_bucket_lifecycle_configuration(Bucket=settings.s3_bucket)["Rules"]
    mine = [r for r in rules if r.get("ID") == rule_id]
    others = [r for r in rules if r.get("ID") != rule_id]
    if others:
        s3.put_bucket_lifecycle_configuration(
            Bucket=settings.s3_bucket, LifecycleConfiguration={"Rules": others}
        )
    else:
        s3.delete_bucket_lifecycle(Bucket=settings.s3_bucket)
    return int(mine[0]["Expiration"]["Days"]) if mine else None
