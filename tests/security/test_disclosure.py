"""What each key may see: clear-text PII only with ``pii:read`` (and each such read audited),
only its own flows' data with a flow-restricted key, and feedback only on its own buyer's
deliveries within the return window."""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.flows import Flow
from engine.runtime.feedback_worker import ensure_feedback_topics
from engine.runtime.registry import apply_flow, delete_flow
from projectors.batch import Record, build_batch
from projectors.exports.runner import ExportWorker
from projectors.exports.scheduler import ExportScheduler
from projectors.store import connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.conftest import _delete_topics_of
from tests.factories import make_flow
from tests.projectors.test_search import wait_visible
from tests.security.conftest import CLEAR_TEXT, DAY_MS, Seeded, _seed
from tests.security.test_route_matrix import GUARDED, request_for
from tests.system_outbox import ensure_outbox

pytestmark = pytest.mark.stack

READS = [r for r in GUARDED if r[0] == "GET"]
# Reads a key needs flows:admin for; asked with a key that has it and still no pii:read.
ADMIN_READS = {"/system-events"}


def _leaks(text: str) -> list[str]:
    return [clear for clear in CLEAR_TEXT if clear.lower() in text.lower()]


@pytest.mark.parametrize(("method", "path"), READS, ids=[" ".join(r) for r in READS])
def test_no_answer_to_a_key_without_pii_read_holds_the_seeded_leads_clear_text(
    seeded: Seeded, method: str, path: str
) -> None:
    reader = "admin" if path in ADMIN_READS else "reader"
    answer = seeded.client(reader).request(**request_for(seeded, method, path))
    # Served (the job routes name no job: their 404 says nothing of a lead either).
    unnamed = "{job_id}" in path or "{schedule_id}" in path
    assert answer.status_code == (404 if unnamed else 200), answer.text
    assert _leaks(answer.text) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_exports_are_masked_without_pii_read(seeded: Seeded, fmt: str) -> None:
    path = f"/flows/{seeded.flow_a}/events/export"
    masked = seeded.client("reader").get(path, params={"format": fmt})
    clear = seeded.client("pii").get(path, params={"format": fmt})
    assert masked.status_code == clear.status_code == 200
    assert _leaks(masked.text) == []
    assert "grace.hopper@navy.example" in clear.text
    assert "g***@navy.example" in masked.text and "202-***-****" in masked.text


def test_an_export_job_of_a_masked_key_writes_a_masked_file(seeded: Seeded) -> None:
    reader = seeded.client("reader")
    job = reader.post("/exports", json={"flow_id": seeded.flow_a, "format": "jsonl"}).json()
    assert job["clear_text"] is False
    with connect(seeded.settings) as conn:
        ExportWorker(seeded.settings).run_once(conn)
    answer = reader.get(f"/exports/{job['id']}/download")
    assert answer.status_code == 200
    text = gzip.decompress(answer.content).decode()
    assert "g***@navy.example" in text and _leaks(text) == []


def test_a_schedule_of_a_masked_key_writes_masked_files(seeded: Seeded, tmp_path: Path) -> None:
    body = {
        "cron": "* * * * *",
        "query": {"flow_id": seeded.flow_a, "format": "jsonl"},
        "destination": {"kind": "local"},
    }
    made = seeded.client("reader").post("/export-schedules", json=body).json()
    assert made["clear_text"] is False
    ensure_outbox(seeded.settings)
    settings = seeded.settings.model_copy(update={"export_local_dir": tmp_path})
    later = datetime.now(UTC) + timedelta(minutes=2)
    worker = ExportScheduler(settings, clock=lambda: later)
    with connect(settings) as conn:
        while (run := worker.run_once(conn)) is not None and run.schedule_id != made["id"]:
            pass
    assert run is not None and run.output_location is not None
    text = gzip.decompress(Path(run.output_location.removeprefix("file://")).read_bytes())
    assert "g***@navy.example" in text.decode() and _leaks(text.decode()) == []


def test_a_clear_text_export_job_needs_pii_read_to_download(seeded: Seeded) -> None:
    job = seeded.client("pii").post("/exports", json={"flow_id": seeded.flow_a}).json()
    assert job["clear_text"] is True
    with connect(seeded.settings) as conn:
        ExportWorker(seeded.settings).run_once(conn)
    answer = seeded.client("reader").get(f"/exports/{job['id']}/download")
    assert answer.status_code == 403


def test_a_pii_read_key_sees_clear_text_and_the_read_is_audited(seeded: Seeded) -> None:
    client = seeded.client("pii")
    answer = client.get(f"/events/{seeded.delivery_a}")
    assert answer.status_code == 200
    assert answer.json()["vars"]["lead.email"] == "grace.hopper@navy.example"
    whoami = client.get("/ui/api/whoami").json()
    with connect(seeded.settings) as conn:
        rows = conn.execute(
            "SELECT k.name, r.route, r.lead_ids FROM engine_pii_reads r"
            " JOIN engine_api_keys k USING (key_id) WHERE r.route = 'GET /events/{event_id}'"
        ).fetchall()
    assert whoami["name"] == "pii"
    assert ("pii", "GET /events/{event_id}", [seeded.lead_a]) in rows


def test_masked_reads_are_not_audited_as_clear_text(seeded: Seeded) -> None:
    seeded.client("reader").get(f"/leads/{seeded.lead_a}/events")
    with connect(seeded.settings) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM engine_pii_reads r JOIN engine_api_keys k USING (key_id)"
            " WHERE k.name = 'reader'"
        ).fetchone()
    assert rows == (0,)


def test_a_flow_restricted_key_sees_only_its_flows(seeded: Seeded) -> None:
    client = seeded.client("reader_a")
    every = client.get("/events", params={"limit": 1000}).json()
    assert {e["flow_id"] for e in every} == {seeded.flow_a}
    assert client.get(f"/leads/{seeded.lead_b}/events").status_code == 404
    assert client.get("/events", params={"flow_id": seeded.flow_b}).status_code == 403
    assert client.get(f"/flows/{seeded.flow_b}/events").status_code == 403
    assert client.get(f"/flows/{seeded.flow_b}/analytics/steps").status_code == 403
    assert client.get("/events/stats", params={"flow_id": seeded.flow_b}).status_code == 403
    assert client.get(f"/flows/{seeded.flow_b}/events/export").status_code == 403
    assert client.post("/exports", json={"flow_id": seeded.flow_b}).status_code == 403
    assert client.get(f"/ui/api/leads/{seeded.lead_b}").status_code == 404
    assert seeded.flow_b not in client.get("/ui/api/flows").json()
    # ... and its own flow as any reader would.
    assert client.get(f"/leads/{seeded.lead_a}/events").status_code == 200


def test_a_buyer_gives_feedback_on_its_own_deliveries_within_the_return_window(
    seeded: Seeded,
) -> None:
    ensure_feedback_topics(seeded.settings)
    premier = seeded.client("premier")
    body = {"type": "return", "reason": "Bad number"}
    own = premier.post("/feedback", params={"event_id": seeded.delivery_a}, json=body)
    assert own.status_code == 202, own.text
    old = premier.post("/feedback", params={"event_id": seeded.old_delivery_a}, json=body)
    assert old.status_code == 403 and old.json()["error"] == "return_window_closed"
    other = seeded.client("other_buyer")
    theirs = other.post("/feedback", params={"event_id": seeded.delivery_a}, json=body)
    assert theirs.status_code == 404  # as if unknown: nothing learnt of premier's leads
    # A feedback key reads nothing.
    assert premier.get(f"/events/{seeded.delivery_a}").status_code == 403


def test_a_recipients_own_return_window_in_the_applied_flow_decides(seeded: Seeded) -> None:
    """``return_window_days`` on the recipient step: a 400-day-old delivery to a buyer with a
    1,000-day window is taken; the deployment's 30 days hold for flows that set none."""
    flow_id = f"{seeded.settings.db_schema}c"
    old = _seed(seeded.settings, flow_id, int(time.time() * 1000) - 400 * DAY_MS)
    codec = EventCodec()
    records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(old)]  # type: ignore[arg-type]
    with connect(seeded.settings) as conn:
        write_batch(conn, "test-c", build_batch(codec, records))
        wait_visible(conn)
    delivery = next(e["id"] for e in old if e["type"] == "recipient.delivered")
    definition = make_flow(flow_id, "http://127.0.0.1:9/leads").model_dump(mode="json")
    premier = next(s for s in definition["steps"] if s["id"] == "premier")
    premier["settings"]["return_window_days"] = 1000
    ensure_feedback_topics(seeded.settings)
    apply_flow(seeded.settings, Flow.model_validate(definition))
    try:
        answer = seeded.client("premier").post(
            "/feedback", params={"event_id": delivery}, json={"type": "return"}
        )
        assert answer.status_code == 202, answer.text
    finally:
        delete_flow(seeded.settings, flow_id)
        _delete_topics_of(seeded.settings, flow_id)
