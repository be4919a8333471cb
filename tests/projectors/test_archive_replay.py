"""Rebuilding from the archive, on real Kafka, Postgres, SeaweedFS and Azurite: the streamer
archives a flow's events (per-event JSON and batched objects, on S3 and Azure), Kafka then
loses the oldest of them (``DeleteRecords``), and a rebuild from archive + topics equals, row
for row, a rebuild from the topics made while they still held everything.

The events are produced in many small transactions, so each partition's offsets have gaps
(transaction markers) the archive must account for; some events are produced after the
streamer stopped, so only the topics hold them.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.contract import ObjectStore, directory
from engine.objects.destination import open_store
from engine.objects.positions import RECORDS
from engine.runtime.kafka.config import admin_config, producer_config
from engine.settings import Settings
from engine.topics import events_topic
from projectors.archive_replay import ArchiveGapError, ArchiveRebuild, BadArchiveError
from projectors.generations import current, generations, migrate_database
from projectors.replay import Rebuild
from projectors.store import Connection, connect
from schemas.codec import EventCodec
from streamers.streamer import run_streamers
from tests.conftest import _delete_topics_of, _drop_schemas_of
from tests.factories import make_lead_events
from tests.streamers.support import SETTLE_S, create_topics, offsets, streaming_flow
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("archive_replay")]

CODEC = EventCodec()
START_MS = 1_764_003_598_000  # 2025-11-24 16:59:58 UTC: the events straddle an hour
HOUR_17 = datetime(2025, 11, 24, 17, tzinfo=UTC)
TO = datetime(2025, 11, 24, 16, 59, 59, tzinfo=UTC)  # archive up to hour 16's objects
BATCH = {"max_records": 50, "max_seconds": 2}
# (store kind, destination fields): both layouts on both stores.
ARCHIVES: dict[str, tuple[str, dict[str, Any]]] = {
    "s3-json-lead": ("s3", {"format": "json"}),
    "s3-jsonl.gz": ("s3", {"format": "jsonl.gz", "batch": BATCH}),
    "azure-json-time": ("azure_blob", {"format": "json", "layout": "time"}),
    "azure-avro": ("azure_blob", {"format": "avro", "batch": BATCH}),
}
TIMELINE_TABLES = ("events", "leads")
ANALYTICS_TABLES = ("daily_event_counts", "counted_events")


@dataclass
class Archived:
    settings: Settings
    flow: Flow
    prefix: str
    topic_only: dict[str, str]  # projection -> generation schema rebuilt from the topics
    deleted_before: dict[tuple[str, int], int]
    stores: dict[str, ObjectStore]


def _produce_in_transactions(settings: Settings, flow_id: str, events: list[Any]) -> None:
    producer = Producer(producer_config(settings, **{"transactional.id": f"{flow_id}-test"}))
    producer.init_transactions(30)
    for start in range(0, len(events), 7):
        producer.begin_transaction()
        for event in events[start : start + 7]:
            topic = events_topic(flow_id, event["step_id"])
            producer.produce(topic, CODEC.encode(event), event["lead_id"].encode())
        producer.commit_transaction(30)


def _leads(flow_id: str, first: int, count: int) -> list[Any]:
    return [
        e
        for i in range(first, first + count)
        for e in make_lead_events(flow_id=flow_id, submitted_ms=START_MS + 100 * i)
    ]


def _archived_to_the_end(settings: Settings, flow: Flow, topics: list[str]) -> bool:
    """Every destination's group committed past each partition's last record (the end is
    a transaction marker: the commit stops one short of it)."""
    state = offsets(settings, flow, topics)
    high = state.pop("high")
    return all(committed[tp] >= end - 1 for committed in state.values() for tp, end in high.items())


def _stream(settings: Settings, flow: Flow, topics: list[str]) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=run_streamers, args=(settings, flow, stop))
    thread.start()
    try:
        wait_until(
            lambda: _archived_to_the_end(settings, flow, topics), SETTLE_S, "archive written"
        )
    finally:
        stop.set()
        thread.join(30)


def _first_offsets_of_hour_17(conn: Connection, schema: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        sql.SQL(
            "SELECT kafka_topic, kafka_partition,"
            " coalesce(min(kafka_offset) FILTER (WHERE ts >= %s), max(kafka_offset) + 1)"
            " FROM {}.events GROUP BY 1, 2"
        ).format(sql.Identifier(schema)),
        (HOUR_17,),
    ).fetchall()
    return {(t, p): int(o) for t, p, o in rows}


def _delete_records(settings: Settings, before: dict[tuple[str, int], int]) -> None:
    admin = AdminClient(admin_config(settings))
    futures = admin.delete_records([TopicPartition(t, p, o) for (t, p), o in before.items()])
    for future in futures.values():
        future.result(30)


@pytest.fixture(scope="module")
def archived(stack: Settings) -> Iterator[Archived]:
    unique = "arc" + datetime.now(UTC).strftime("%H%M%S%f")
    settings = stack.model_copy(
        update={"db_schema": unique, "projector_pattern": rf"^leadflow\.{unique}\.events\..+$"}
    )
    prefix = f"archive-tests/{unique}"
    flow = streaming_flow(settings, unique, prefix).model_copy(
        update={
            "destinations": [
                Destination(
                    kind=kind,
                    bucket=settings.s3_bucket if kind == "s3" else settings.azure_container,
                    prefix=f"{prefix}/{name}",
                    **fields,
                )
                for name, (kind, fields) in ARCHIVES.items()
            ]
        }
    )
    stores = {
        "s3": open_store(Destination(kind="s3", bucket=settings.s3_bucket), settings),
        "azure_blob": open_store(
            Destination(kind="azure_blob", bucket=settings.azure_container), settings
        ),
    }
    try:
        topics = create_topics(settings, flow)
        migrate_database(settings)
        _produce_in_transactions(settings, unique, _leads(unique, 0, 60))
        _stream(settings, flow, topics)
        # Only the topics hold these: the streamer has stopped.
        _produce_in_transactions(settings, unique, _leads(unique, 60, 10))
        topic_only = {}
        for name in ("timeline", "analytics"):
            result = Rebuild(settings, name, batch_size=83).run(threading.Event())
            assert result.switched
            topic_only[name] = result.generation.schema
        with connect(settings) as conn:
            cut = _first_offsets_of_hour_17(conn, topic_only["timeline"])
        # Kafka loses what came before hour 17 but for the last record (the archive
        # holds it all, but for the objects of hour 17, which the topics still hold).
        before = {tp: max(0, offset - 1) for tp, offset in cut.items()}
        assert sum(before.values()) > 100
        _delete_records(settings, before)
        yield Archived(settings, flow, prefix, topic_only, before, stores)
    finally:
        for store in stores.values():
            store.close()
        _delete_topics_of(stack, unique)
        _drop_schemas_of(stack, unique)


# -- comparing generations -----------------------------------------------------------------


def _table(conn: Connection, schema: str, table: str) -> list[tuple[Any, ...]]:
    """Every row but ``xid`` (which transaction wrote it: not data), sorted."""
    columns = [
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s AND column_name <> 'xid'"
            " ORDER BY ordinal_position",
            (schema, table),
        ).fetchall()
    ]
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, table)
    )
    return sorted(conn.execute(query).fetchall(), key=repr)


def _assert_same(conn: Connection, built: str, expected: str, tables: tuple[str, ...]) -> None:
    for table in tables:
        want = _table(conn, expected, table)
        assert want, f"{expected}.{table} is empty"
        got = _table(conn, built, table)
        assert len(got) == len(want), f"{table}: {len(got)} rows, topic-only has {len(want)}"
        assert got == want, f"{table}: {built} differs from the topic-only {expected}"


def _rebuild(a: Archived, name: str, archive: str, **options: Any) -> Any:
    kind, _ = ARCHIVES[archive]
    return ArchiveRebuild(
        a.settings, name, a.stores[kind], f"{a.prefix}/{archive}", batch_size=71, **options
    ).run(threading.Event())


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("archive", list(ARCHIVES))
def test_archive_then_topics_equals_a_topic_only_rebuild_row_for_row(
    archived: Archived, archive: str
) -> None:
    for name, tables in (("timeline", TIMELINE_TABLES), ("analytics", ANALYTICS_TABLES)):
        result = _rebuild(archived, name, archive, to_time=TO)
        assert result.topics.switched and not result.bad
        assert result.archive_events > 0 and result.topics.records > 0  # both sources used
        # The hand-over is where each partition's archived events end, never before what
        # Kafka still holds.
        for tp, offset in result.hand_over.items():
            assert offset >= archived.deleted_before.get(tp, 0), tp
        with connect(archived.settings) as conn:
            _assert_same(conn, result.topics.generation.schema, archived.topic_only[name], tables)


def test_an_archive_that_ends_before_the_topics_begin_is_refused(archived: Archived) -> None:
    """An archive read up to an hour before any event: Kafka no longer holds the oldest
    records and the archive does not give them, so the rebuild stops and nothing switches."""
    settings = archived.settings
    with connect(settings) as conn:
        before = _active(conn, settings, "timeline")
    with pytest.raises(ArchiveGapError, match="gap"):
        _rebuild(
            archived, "timeline", "s3-jsonl.gz", to_time=datetime(2025, 11, 24, 15, tzinfo=UTC)
        )
    with connect(settings) as conn:
        assert _active(conn, settings, "timeline") == before
        assert current(conn, settings.db_schema, "timeline", "building") is None


def _active(conn: Connection, settings: Settings, name: str) -> str:
    found = current(conn, settings.db_schema, name, "active")
    assert found is not None
    return found.schema


# -- bad input -----------------------------------------------------------------------------


def _copy_with_faults(store: ObjectStore, source: str, target: str) -> dict[str, str]:
    """The batched archive under ``source`` copied to ``target``, with three objects spoiled:
    one truncated, one not gzip, one with a line that does not parse. Returns key -> fault."""
    keys = [k for k in store.list_keys(directory(source)) if k.endswith(".jsonl.gz")]
    several = [k for k in keys if int(store.metadata(k)[RECORDS]) >= 3]
    assert len(several) >= 3
    faults = {several[0]: "truncated", several[1]: "not gzip", several[2]: "bad line"}
    spoiled = {}
    for key in keys:
        body, metadata = store.get(key), store.metadata(key)
        fault = faults.get(key)
        if fault == "truncated":
            body = body[: len(body) // 2]
        elif fault == "not gzip":
            body = b"this is not gzip\n"
        elif fault == "bad line":
            lines = gzip.decompress(body).split(b"\n")
            lines[1] = b'{"id": "unterminated'
            body = gzip.compress(b"\n".join(lines), mtime=0)
        new_key = target + key.removeprefix(source)
        store.put_file_if_absent(new_key, BytesIO(body), "application/gzip", metadata)
        if fault:
            spoiled[new_key] = fault
    return spoiled


def test_bad_objects_are_reported_by_key_and_line_and_stop_the_rebuild_unless_skipped(
    archived: Archived,
) -> None:
    settings, store = archived.settings, archived.stores["s3"]
    source = f"{archived.prefix}/s3-jsonl.gz"
    target = f"{archived.prefix}/spoiled"
    spoiled = _copy_with_faults(store, source, target)
    with connect(settings) as conn:
        before = _active(conn, settings, "timeline")

    with pytest.raises(BadArchiveError) as refused:
        ArchiveRebuild(settings, "timeline", store, target).run(threading.Event())
    reported = {b.key: b for b in refused.value.bad}
    assert set(reported) == set(spoiled)
    bad_line = next(k for k, f in spoiled.items() if f == "bad line")
    assert reported[bad_line].line == 2
    truncated = next(k for k, f in spoiled.items() if f == "truncated")
    assert "truncated" in reported[truncated].error and reported[truncated].line is not None
    assert all(k in str(refused.value) for k in spoiled)
    with connect(settings) as conn:
        # Stopped before switching: the serving generation is untouched, nothing half-built.
        assert _active(conn, settings, "timeline") == before
        assert current(conn, settings.db_schema, "timeline", "building") is None

    skipped = ArchiveRebuild(settings, "timeline", store, target, skip_bad=True).run(
        threading.Event()
    )
    assert skipped.topics.switched
    assert {b.key for b in skipped.bad} == set(spoiled)
    with connect(settings) as conn:
        rebuilt = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.events").format(
                sql.Identifier(skipped.topics.generation.schema)
            )
        ).fetchone()
        full = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.events").format(
                sql.Identifier(archived.topic_only["timeline"])
            )
        ).fetchone()
        assert rebuilt and full and 0 < rebuilt[0] < full[0]  # what was skipped is missing
        assert len(generations(conn, settings.db_schema, "timeline")) > 2


def test_the_command_rebuilds_from_an_azure_archive_and_says_what_it_read(
    archived: Archived,
) -> None:
    settings = archived.settings
    env = {
        **os.environ,
        "LEADFLOW_DB_SCHEMA": settings.db_schema,
        "LEADFLOW_PROJECTOR_PATTERN": settings.projector_pattern,
        "LEADFLOW_LOG_FORMAT": "json",
    }
    url = f"azure://{settings.azure_container}/{archived.prefix}/azure-avro"
    command = [sys.executable, "-m", "engine", "replay", "analytics", "--from-archive", url,
               "--to", TO.isoformat()]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "archived objects" in done.stderr and "is active" in done.stderr
    with connect(settings) as conn:
        rebuilt = _active(conn, settings, "analytics")
        _assert_same(conn, rebuilt, archived.topic_only["analytics"], ANALYTICS_TABLES)

    refused = subprocess.run(
        [*command[:4], "timeline", "--from-archive", "gs://nowhere/x"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0 and "s3://bucket/prefix" in refused.stderr
