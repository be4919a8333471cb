"""projector: events/s of the timeline projector's write path, next to a bare binary COPY.

Both sides get the same pre-decoded rows of the shared input (one event per
lead: the ``leads`` upsert touches a row per event, its worst case) in batches
of the projector's default size, into fresh tables of the same layout:
``write_batch`` (COPY to staging, insert with ON CONFLICT, leads upsert,
checkpoints, one transaction per batch) versus a binary COPY straight into a
copy of ``events`` (same indexes), one transaction per batch. Decoding
(``build_batch``) is timed apart.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from bench.inputs import accepted_events
from engine.settings import Settings
from projectors.batch import EVENT_COLUMNS, Batch, Record, build_batch
from projectors.generations import current, migrate
from projectors.projector import DEFAULT_BATCH_SIZE
from projectors.store import Connection, connect
from projectors.writing import write_batch
from schemas.codec import default_codec

# The events table's own column types (the staging table widens integers to int8).
_INT4_COLUMNS = {"flow_version", "ms", "wait_ms", "overhead_ms", "step_count", "kafka_partition"}
# jsonb's binary wire format is a version byte, then the JSON text: sent as raw bytes.
_BARE_TYPES = [
    "int4" if name in _INT4_COLUMNS else ("bytea" if name == "snapshot" else pg_type)
    for name, pg_type in EVENT_COLUMNS
]
_SNAPSHOT = [name for name, _ in EVENT_COLUMNS].index("snapshot")


def _bare_copy(conn: Connection, table: sql.Identifier, batches: list[Batch]) -> float:
    rows = [
        [(*row[:_SNAPSHOT], b"\x01" + row[_SNAPSHOT], *row[_SNAPSHOT + 1 :]) for row in b.events]
        for b in batches
    ]
    columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in EVENT_COLUMNS)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, columns)
    started = time.perf_counter()
    for chunk in rows:
        with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(_BARE_TYPES)
            for row in chunk:
                copy.write_row(row)
    return time.perf_counter() - started


def run_round(params: dict[str, Any]) -> dict[str, float]:
    schema = f"b{params['run_id']}p{params['round']}"
    settings = Settings(db_schema=schema)
    encoded = accepted_events(f"b{params['run_id']}", params["events"])
    records = [
        Record(params["input_topic"], i % 3, i, value, key)
        for i, (key, value, _) in enumerate(encoded)
    ]
    chunks = [
        records[i : i + DEFAULT_BATCH_SIZE] for i in range(0, len(records), DEFAULT_BATCH_SIZE)
    ]
    started = time.perf_counter()
    batches = [build_batch(default_codec(), chunk) for chunk in chunks]
    decode_s = time.perf_counter() - started
    with connect(settings) as conn:
        migrate(conn, schema)
        generation = current(conn, schema, "timeline", "active")
        assert generation is not None
        started = time.perf_counter()
        for batch in batches:
            write_batch(conn, "bench", batch, generation)
        write_s = time.perf_counter() - started
        bare = sql.Identifier(schema, "bare_events")
        source = sql.Identifier(generation.schema, "events")
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(bare, source))
        copy_s = _bare_copy(conn, bare, batches)
    n = len(records)
    return {
        "events_s": n / write_s,
        "bare_copy_events_s": n / copy_s,
        "decode_events_s": n / decode_s,
    }
