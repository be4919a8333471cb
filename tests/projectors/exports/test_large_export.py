"""Exports of 200,000 events in bounded memory: Python's allocations are traced while the
whole file goes by, and compared with the file's size and with a ten times smaller export.
No wall-clock assertion: what is specified is that memory does not grow with the rows."""

from __future__ import annotations

import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn

from engine.destinations import Destination
from engine.objects.destination import open_store
from engine.settings import Settings
from projectors.exports.jobs import create_job
from projectors.exports.query import ExportStream
from projectors.exports.runner import ExportWorker
from projectors.selection import ExportQuery
from projectors.store import Connection, connect
from tests.factories import make_lead_events
from tests.keys import ADMIN
from tests.projectors.exports.conftest import BASE_MS, api, write_events

pytestmark = pytest.mark.stack

ROWS = 200_000
SLICE = ROWS // 10
START = datetime.fromtimestamp(BASE_MS / 1000, UTC)

# Copies of one stored event, a millisecond apart, each with its own id and lead.
_CLONE = """
INSERT INTO events
SELECT copy.*
FROM events t, generate_series(0, %(rows)s - 1) g,
LATERAL jsonb_populate_record(t, jsonb_build_object(
    'id', t.id || lpad(g::text, 7, '0'),
    'lead_id', t.lead_id || lpad((g / 5)::text, 6, '0'),
    'ts', %(start)s::timestamptz + g * interval '1 millisecond',
    'kafka_offset', g,
    'snapshot', t.snapshot || jsonb_build_object('id', t.id || lpad(g::text, 7, '0'))
)) copy
WHERE t.id = %(template)s
"""


@pytest.fixture
def many_events(db: Connection, pg_schema: str) -> str:
    """``ROWS`` events of flow ``pg_schema`` (only the copies: the template is deleted)."""
    template = make_lead_events(flow_id=pg_schema, submitted_ms=BASE_MS)[3]
    write_events(db, [template])
    db.execute(_CLONE, {"start": START, "rows": ROWS, "template": template["id"]})
    db.execute("DELETE FROM events WHERE id = %s", (template["id"],))
    return pg_schema


def peak_memory(work: Callable[[], int]) -> tuple[int, int]:
    """(what ``work`` returned, peak bytes Python allocated meanwhile above the start)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - base


def drain(settings: Settings, query: ExportQuery, counted: dict[str, int]) -> Callable[[], int]:
    def work() -> int:
        with connect(settings) as conn:
            stream = ExportStream(conn, query)
            counted["bytes"] = sum(len(chunk) for chunk in stream)
        return stream.rows

    return work


@pytest.mark.parametrize("export_format", ["csv", "jsonl"])
def test_a_stream_holds_the_same_bounded_memory_for_ten_times_the_rows(
    pg_settings: Settings, many_events: str, export_format: Any
) -> None:
    all_rows = ExportQuery(flow_id=many_events, format=export_format)
    a_tenth = all_rows.model_copy(update={"end": START + timedelta(milliseconds=SLICE)})
    size: dict[str, int] = {}

    rows, peak = peak_memory(drain(pg_settings, all_rows, size))
    slice_rows, slice_peak = peak_memory(drain(pg_settings, a_tenth, {}))

    assert (rows, slice_rows) == (ROWS, SLICE)
    assert peak < size["bytes"] / 10, f"peak {peak:,} B for a {size['bytes']:,} B file"
    assert peak < 2 * slice_peak, f"peak {peak:,} B for all rows, {slice_peak:,} B for a tenth"


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot own signal handlers
        pass


@pytest.fixture
def http_server(pg_settings: Settings) -> Iterator[str]:
    """The export API on a real HTTP server (the test client would buffer whole bodies)."""
    server = _Server(uvicorn.Config(api(pg_settings), port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.05)
    (sock,) = [s for srv in server.servers for s in srv.sockets]
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join()


def test_an_http_export_streams_in_bounded_memory(http_server: str, many_events: str) -> None:
    size = {"bytes": 0}

    def download() -> int:
        url = f"{http_server}/flows/{many_events}/events/export"
        lines = 0
        with httpx.stream(
            "GET", url, params={"format": "jsonl"}, headers=ADMIN, timeout=120
        ) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_bytes():
                size["bytes"] += len(chunk)
                lines += chunk.count(b"\n")
        return lines

    lines, peak = peak_memory(download)

    assert lines == ROWS
    assert peak < size["bytes"] / 20, f"peak {peak:,} B for a {size['bytes']:,} B answer"


def test_a_large_job_spools_to_disk_and_uploads_in_bounded_memory(
    export_settings: Settings, many_events: str
) -> None:
    all_rows = ExportQuery(flow_id=many_events, format="jsonl")
    a_tenth = all_rows.model_copy(update={"end": START + timedelta(milliseconds=SLICE)})
    with connect(export_settings) as conn:
        small = create_job(conn, export_settings, a_tenth, None)
        slice_rows, slice_peak = peak_memory(lambda: run_job(export_settings, conn))
        large = create_job(conn, export_settings, all_rows, None)
        rows, peak = peak_memory(lambda: run_job(export_settings, conn))

    assert (slice_rows, rows) == (SLICE, ROWS)
    size = uncompressed_size(export_settings, large.object_key)
    assert uncompressed_size(export_settings, small.object_key) < size / 5
    # Opening an S3 client loads botocore's service model: some MB, whatever the file.
    assert peak < 2 * slice_peak, f"peak {peak:,} B for all rows, {slice_peak:,} B for a tenth"
    assert peak < size / 5, f"peak {peak:,} B for a {size:,} B export"


def run_job(settings: Settings, conn: Connection) -> int:
    job = ExportWorker(settings).run_once(conn)
    assert job is not None and job.status == "complete", job and job.error
    assert job.row_count is not None
    return job.row_count


def uncompressed_size(settings: Settings, key: str) -> int:
    store = open_store(Destination(kind="s3", bucket=settings.export_bucket), settings)
    unzip = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        return sum(len(unzip.decompress(chunk)) for chunk in store.read_chunks(key))
    finally:
        store.close()
