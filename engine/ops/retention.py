"""``leadflow retention``: what every store holds against the flows' retention, and the
run that removes what has expired (``engine.retention`` decides; each store's module acts).

One pass over the stores, in this order: the topics (``retention.ms`` set where it
differs; Kafka deletes old segments itself), the timeline (partitions dropped), the
analytics rollups, the engine's state tables, the export files, then each destination's
objects. A dry run reads the same figures and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.destination import open_store
from engine.retention import Holding, cutoff, longest_retention_ms, topic_retention
from engine.runtime.kafka.clients import new_admin
from engine.runtime.kafka.offsets import list_offsets
from engine.runtime.kafka.topics import set_retention
from engine.runtime.kafka.topics import topic_retention as topic_retention_now
from engine.runtime.registry import shared_topics
from engine.settings import Settings
from engine.state import postgres as state_db
from engine.state.pruning import prune, prune_targets, table_states
from projectors.expiry import expire_analytics, expire_timeline
from projectors.exports.expiry import expire_exports
from projectors.store import connect
from streamers.expiry import expire_objects

log = structlog.get_logger(__name__)

Step = Callable[[], list[Holding]]


def retention_steps(
    settings: Settings, flows: Sequence[Flow], now: datetime, *, execute: bool
) -> list[tuple[str, Step]]:
    """The run's steps, each named for progress and returning what its store holds."""
    dry = not execute
    steps: list[tuple[str, Step]] = [
        ("kafka topics", lambda: kafka_topics(settings, flows, execute=execute)),
        ("timeline", lambda: _projection(settings, flows, now, expire_timeline, dry)),
        ("analytics", lambda: _projection(settings, flows, now, expire_analytics, dry)),
        ("engine state", lambda: engine_state(settings, flows, now, execute=execute)),
        ("export files", lambda: _exports(settings, flows, now, dry)),
    ]
    for flow in flows:
        for dest in flow.destinations:
            steps.append((f"objects {dest.name}", _objects_step(settings, flow, dest, now, dry)))
    return steps


def _objects_step(
    settings: Settings, flow: Flow, dest: Destination, now: datetime, dry_run: bool
) -> Step:
    return lambda: _objects(settings, flow, dest, now, dry_run)


def kafka_topics(settings: Settings, flows: Sequence[Flow], *, execute: bool) -> list[Holding]:
    """Each flow topic's records and ``retention.ms``, against what the flows say."""
    admin = new_admin(settings)
    wanted = topic_retention(flows, shared_topics(settings))
    current = topic_retention_now(admin, list(wanted))
    changed = set_retention(admin, wanted) if execute else {}
    parts = [
        (t, p)
        for t, meta in admin.list_topics(timeout=10).topics.items()
        if t in current
        for p in meta.partitions
    ]
    first = list_offsets(admin, parts, "earliest") if parts else {}
    end = list_offsets(admin, parts, "latest") if parts else {}
    out = []
    for topic in sorted(current):
        records = sum(end[tp] - first[tp] for tp in first if tp[0] == topic)
        now_ms, want = current[topic], wanted[topic]
        action = (
            f"retention.ms {now_ms} = flows'"
            if now_ms == want
            else f"retention.ms {now_ms} -> {want}"
        )
        out.append(
            Holding(
                "kafka",
                f"topic {topic}",
                records,
                "records",
                None,
                0,
                action + " (the broker deletes old segments)",
                1 if topic in changed else 0,
            )
        )
    return out


def _projection(
    settings: Settings,
    flows: Sequence[Flow],
    now: datetime,
    expire: Callable[..., list[Holding]],
    dry_run: bool,
) -> list[Holding]:
    with connect(settings, application_name="leadflow-retention") as conn:
        row = conn.execute("SELECT to_regclass('projection_generations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            log.warning(
                "no projections to expire: run leadflow db migrate", schema=settings.db_schema
            )
            return []
        return expire(conn, settings.db_schema, flows, now, dry_run=dry_run)


def engine_state(
    settings: Settings, flows: Sequence[Flow], now: datetime, *, execute: bool
) -> list[Holding]:
    targets = prune_targets(flows, now)
    with state_db.connect(settings) as conn:
        states = {s.table: s for s in table_states(conn, targets)}
        removed = {t.table: prune(conn, t) for t in targets if execute and t.table in states}
    return [
        Holding(
            "engine state",
            s.table,
            s.rows,
            "rows",
            s.oldest,
            s.expired,
            f"delete in batches: {s.label}",
            removed.get(s.table, 0),
        )
        for s in states.values()
    ]


def _exports(
    settings: Settings, flows: Sequence[Flow], now: datetime, dry_run: bool
) -> list[Holding]:
    edge = cutoff(now, longest_retention_ms(flows))
    with connect(settings, application_name="leadflow-retention") as conn:
        return expire_exports(conn, settings, edge, dry_run=dry_run)


def _objects(
    settings: Settings, flow: Flow, dest: Destination, now: datetime, dry_run: bool
) -> list[Holding]:
    store = open_store(dest, settings, threads=4)
    try:
        return expire_objects(store, flow, dest, now, dry_run=dry_run)
    finally:
        store.close()
