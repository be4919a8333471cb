"""The erasure proof (#18), on the real stack: the demo flow (which seals its personal fields)
runs three people's leads through its steps, the timeline projector, and streamers to S3
and Azure in every layout (per-event by lead, per-event by time, batched JSON lines,
batched Avro); an export file is written in clear text for a ``pii:read`` key. Then one
person is erased - first by an erase that crashes half way, then by running it again -
the projection is rebuilt from the topics and replayed from the archive, and every store
is searched for that person's email, phone and names in clear text: every record of
every topic (all partitions, aborted transactions too), every row of every table (all
columns as text), every object in S3 and Azure (decoded: gzip and Avro's deflate hide
text from a byte search), the export files and the logs of the whole run. Zero hits;
the other two people are intact.

``AFTER_ERASURE`` lists what runs between the erasure and the search: a rebuild from the
topics, then a replay from the streamed archive (``leadflow projections replay
--from-archive``, #19), so what each writes is searched like every other store.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from engine.access.store import create_key
from engine.api.app import create_app
from engine.cli import app as cli_app
from engine.demo.buyer import BuyerServer
from engine.destinations import Destination
from engine.flows import Flow, load_flow
from engine.objects.contract import ObjectStore
from engine.objects.destination import open_store
from engine.ops import erase_cli, erasure
from engine.ops.erasure_rows import ERASED_EVENT
from engine.ops.submit import publish_leads
from engine.runtime.sealer import LeadSealer
from engine.runtime.step_worker import prepare_topics
from engine.sealing import ERASED, master_key_from_env, new_master_key_text
from engine.settings import Settings
from engine.state.keys import LeadKeys
from engine.state.postgres import connect as state_connect
from projectors.archive_replay import ArchiveRebuild
from projectors.exports.jobs import create_job, migrate_exports
from projectors.exports.runner import ExportWorker
from projectors.generations import migrate_database
from projectors.projector import TimelineProjector
from projectors.replay import Rebuild
from projectors.selection import ExportQuery
from projectors.store import connect
from streamers.readback import decode_object
from streamers.streamer import run_streamers
from tests.kafka_helpers import run_steps, wait_for_completion
from tests.projectors.support import flow_pattern, running
from tests.security.test_sealing_at_rest import _every_row, _raw_records
from tests.streamers.support import SETTLE_S
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

DEMO_FLOW = Path(__file__).parents[2] / "flows" / "demo.yaml"

# Names no other data holds by chance, so a hit is this person's data and nothing else.
PERSON = {
    "first_name": "Zebulonia",
    "last_name": "Quixmortonova",
    "email": "zebulonia.quix@erase.example",
    "phone_1": "(512) 555-0177",
    "state": "TX",
    "postal_code": "78701",
    "tcpa_consent": True,
}
PERSON_CLEAR = (
    "zebulonia",  # searched lower-cased: first name and the email's local part
    "quixmortonova",
    "erase.example",
    "5125550177",
    "555-0177",
    "555 0177",
)
OTHERS = [
    {
        **PERSON,
        "first_name": "Hortensia",
        "last_name": "Vandermeulen",
        "email": "hortensia.v@keep.example",
        "phone_1": "(512) 555-0188",
    },
    {
        **PERSON,
        "first_name": "Ignatius",
        "last_name": "Pemberton",
        "email": "ignatius.p@keep.example",
        "phone_1": "(602) 555-0199",
        "state": "AZ",
    },
]
BATCH = "batch: {max_records: 20, max_seconds: 1}"


@dataclass
class Run:
    settings: Settings
    flow: Flow
    flow_file: Path
    person: str
    others: list[str]
    stores: dict[str, ObjectStore]
    prefix: str


def _flow_text(uid: str, settings: Settings, buyer: BuyerServer, prefix: str) -> str:
    """The demo flow under its own id, its services on the test's buyer, and a destination
    in each layout and format."""
    text = DEMO_FLOW.read_text(encoding="utf-8").split("\ndestinations:")[0]
    text = text.replace("id: demo\n", f"id: {uid}\n", 1)
    text = text.replace("http://127.0.0.1:8765", buyer.url.rsplit("/", 1)[0])
    s3, azure = settings.s3_bucket, settings.azure_container
    return text + (
        "\ndestinations:\n"
        f"  - {{kind: s3, bucket: {s3}, prefix: {prefix}/s3-lead}}\n"
        f"  - {{kind: azure_blob, bucket: {azure}, prefix: {prefix}/azure-time, layout: time}}\n"
        f"  - {{kind: s3, bucket: {s3}, prefix: {prefix}/s3-jsonl, format: jsonl.gz, {BATCH}}}\n"
        f"  - {{kind: azure_blob, bucket: {azure}, prefix: {prefix}/azure-avro, format: avro,"
        f" {BATCH}}}\n"
    )


def _projected(settings: Settings, query: str, params: tuple[Any, ...]) -> int:
    with connect(settings) as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def _erase(*args: str) -> Any:
    return CliRunner().invoke(cli_app, ["erase", *args])


@pytest.fixture
def run(
    stack: Settings,
    unique_id: str,
    buyer: BuyerServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Run]:
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", new_master_key_text())
    prefix = f"erasure-proof/{unique_id}"
    settings = stack.model_copy(
        update={
            "db_schema": unique_id,
            "projector_pattern": flow_pattern(unique_id),
            "feedback_topic": f"leadflow.{unique_id}.feedback",
            "export_worker_in_api": False,
            "export_prefix": f"{prefix}/exports/",
            "api_key_cache_seconds": 0.0,
        }
    )
    monkeypatch.setattr(erase_cli, "get_settings", lambda: settings)
    monkeypatch.setattr(erase_cli, "read_flows", lambda _settings: [])  # -f names the flow
    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(_flow_text(unique_id, settings, buyer, prefix), encoding="utf-8")
    flow = load_flow(flow_file)
    assert flow.seals
    prepare_topics(settings, flow)
    migrate_database(settings)
    migrate_exports(settings)
    stores = {
        kind: open_store(Destination(kind=kind, bucket=bucket), settings)
        for kind, bucket in (("s3", settings.s3_bucket), ("azure_blob", settings.azure_container))
    }
    stop = threading.Event()
    threads = run_steps(settings, flow, stop)
    streaming = threading.Thread(target=run_streamers, args=(settings, flow, stop), daemon=True)
    streaming.start()
    try:
        with running(TimelineProjector(settings, settings.projector_pattern, batch_ms=50)):
            sealer = LeadSealer.for_flow(flow, settings)
            assert sealer is not None
            try:
                person, *others = publish_leads(settings, flow.id, [PERSON, *OTHERS], sealer)
            finally:
                sealer.close()
            wait_for_completion(settings, flow, 3)
            wait_until(
                lambda: _projected(
                    settings, "SELECT count(*) FROM events WHERE type = 'flow.completed'", ()
                ),
                60,
                "3 leads completed in the projection",
                until=lambda n: n >= 3,
            )
            # Every event in every destination (offsets would not say: the step topics are
            # transactional, their commit markers keep the high watermark one past the end).
            events = _projected(settings, "SELECT count(*) FROM events", ())
            wait_until(
                lambda: _streamed(stores, prefix),
                SETTLE_S,
                f"{events} events in each destination",
                until=lambda counts: len(counts) == 4 and set(counts.values()) == {events},
            )
            yield Run(settings, flow, flow_file, person, others, stores, prefix)
    finally:
        stop.set()
        for thread in [*threads, streaming]:
            thread.join(60)
        for store in stores.values():
            store.close()


def _objects(run: Run) -> dict[str, tuple[bytes, list[dict[str, Any]]]]:
    """Every object under the run's prefix in both stores: raw bytes and decoded events."""
    out: dict[str, tuple[bytes, list[dict[str, Any]]]] = {}
    for kind, store in run.stores.items():
        for key in store.list_keys(run.prefix + "/"):
            body = store.get(key)
            if "/exports/" in key:
                out[f"{kind}:{key}"] = (gzip.decompress(body), [])
            else:
                out[f"{kind}:{key}"] = (body, decode_object(key, body))
    return out


def _streamed(stores: dict[str, ObjectStore], prefix: str) -> dict[str, int]:
    """Events held per destination (by its prefix), each event id counted once."""
    ids: dict[str, set[str]] = {}
    for store in stores.values():
        for key in store.list_keys(prefix + "/"):
            if "/exports/" not in key:
                events = decode_object(key, store.get(key))
                ids.setdefault(key.split("/")[2], set()).update(e["id"] for e in events)
    return {name: len(found) for name, found in ids.items()}


def _erased_in(run: Run) -> set[str]:
    """The destinations (by prefix) that hold the erased person's ``lead.erased``."""
    return {
        name.split("/")[2]
        for name, (_, events) in _objects(run).items()
        if any(e["lead_id"] == run.person and e["type"] == ERASED_EVENT for e in events)
    }


def _pii_client(settings: Settings) -> TestClient:
    _, key = create_key(settings, "proof", ["events:read", "pii:read", "exports"])
    return TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})


def _rebuild_projection(run: Run) -> None:
    """The timeline rebuilt from the topics (a new generation, switched to)."""
    result = Rebuild(run.settings, "timeline", batch_size=200).run(threading.Event())
    assert result.switched


def _replay_from_archive(run: Run) -> None:
    """The timeline rebuilt from the batched S3 archive, then the topics (``leadflow
    projections replay --from-archive``, #19): the archive holds the erased person's
    events, sealed under a key that is gone."""
    rebuild = ArchiveRebuild(run.settings, "timeline", run.stores["s3"], f"{run.prefix}/s3-jsonl")
    result = rebuild.run(threading.Event())
    assert result.archive_events > 0 and result.bad == []
    assert result.topics.switched


# Run after the erasure, before the search: every way a projection is rebuilt.
AFTER_ERASURE: list[Callable[[Run], None]] = [_rebuild_projection, _replay_from_archive]


def _hits(text: str) -> list[str]:
    lowered = text.lower()
    return [c for c in PERSON_CLEAR if c in lowered]


def test_an_erased_person_is_in_no_store_in_clear_text_and_the_others_are_intact(
    run: Run, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings, flow, flow_arg = run.settings, run.flow, ("-f", str(run.flow_file))

    # Before: the search finds the person where clear text is allowed to be (else it would
    # prove nothing) - a pii:read export file, the API for pii:read - and nowhere at rest.
    with connect(settings) as conn:
        held = create_job(conn, settings, ExportQuery(format="jsonl", flow_id=flow.id), "proof")
        assert ExportWorker(settings).run_once(conn) is not None
        kept = create_job(conn, settings, ExportQuery(format="jsonl", lead_id=run.others[0]), "p")
        assert ExportWorker(settings).run_once(conn) is not None
    objects = _objects(run)
    assert _hits(objects[f"s3:{held.object_key}"][0].decode())
    client = _pii_client(settings)
    assert _hits(client.get(f"/leads/{run.person}/events").text)
    at_rest = {name: raw for name, (raw, _) in objects.items() if "/exports/" not in name}
    assert [n for n, raw in at_rest.items() if _hits(raw.decode(errors="replace"))] == []
    person_objects = [
        name
        for name, (_, events) in objects.items()
        if any(e["lead_id"] == run.person for e in events)
    ]
    layouts = {name.split("/")[2] for name in person_objects}
    assert layouts == {"s3-lead", "azure-time", "s3-jsonl", "azure-avro"}

    # An erase that crashes after phase one: the key is gone (nothing readable) and the
    # tombstone says unfinished - never "erased" while still readable.
    def crash(*_: Any) -> Any:
        raise RuntimeError("crashed half way")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(erasure, "erase_objects", crash)
        crashed = _erase("--email", "Zebulonia.Quix@Erase.example", *flow_arg)
    assert crashed.exit_code != 0 and isinstance(crashed.exception, RuntimeError)
    assert run.person in crashed.stdout
    assert ERASED in client.get(f"/leads/{run.person}/events").text
    with state_connect(settings) as conn:
        unfinished = conn.execute(
            "SELECT finished_at IS NULL FROM engine_erased_leads WHERE lead_id = %s", (run.person,)
        ).fetchone()
    assert unfinished == (True,)
    # The same command again: it finishes. Unknown people: "not found", exit 1.
    again = _erase("--email", "Zebulonia.Quix@Erase.example", *flow_arg)
    assert again.exit_code == 0, again.output
    # The crashed run had overwritten the rows and removed the export: the rerun does the rest.
    assert "0 row(s) overwritten" in again.output and "0 export(s) removed" in again.output
    assert "lead.erased on" in again.output and " 0 object(s) deleted" not in again.output
    assert "batched objects keep ciphertext only" in again.output
    finished = _erase("--email", "Zebulonia.Quix@Erase.example", *flow_arg)
    assert finished.exit_code == erase_cli.NOT_FOUND  # finished: nothing links them any more
    assert _erase("--lead", run.person, *flow_arg).exit_code == 0  # idempotent by id
    unknown = _erase("--email", "nobody@erase.example", *flow_arg)
    assert unknown.exit_code == erase_cli.NOT_FOUND and "not found" in unknown.output
    assert _erase("--lead", "01JNOSUCHLEAD0000000000000").exit_code == erase_cli.NOT_FOUND
    # lead.erased reaches the projection and every destination (the streamers run on).
    wait_until(
        lambda: _projected(
            settings, "SELECT count(*) FROM events WHERE type = %s", (ERASED_EVENT,)
        ),
        60,
        "lead.erased in the projection",
    )
    wait_until(
        lambda: _erased_in(run),
        SETTLE_S,
        "lead.erased in every destination",
        until=lambda where: where == {"s3-lead", "azure-time", "s3-jsonl", "azure-avro"},
    )
    for step in AFTER_ERASURE:
        step(run)

    # Every topic, every record, every partition.
    records = _raw_records(settings, flow.id)
    assert len({topic for topic, *_ in records}) >= 6
    leaked = [(t, o) for t, _, o, v in records if _hits(v.decode(errors="replace"))]
    assert leaked == []
    assert any(b"lead.erased" in v for t, _, _, v in records if t.endswith(".events.feedback"))

    # Every row of every table of the flow's schemas (the rebuilt generation included).
    with connect(settings) as conn:
        rows = _every_row(conn, settings.db_schema)
    assert run.person in rows and run.others[0] in rows
    assert "hortensia" not in rows.lower()  # the others' values are sealed, not clear
    assert _hits(rows) == []

    # Every object in S3 and Azure, decoded: the person's per-event objects are gone but
    # for lead.erased; the batched ones hold only ciphertext, under a key that is gone.
    objects = _objects(run)
    for name, (raw, events) in objects.items():
        assert _hits(raw.decode(errors="replace")) == [], name
        assert _hits(orjson.dumps(events).decode()) == [], name
    theirs = [
        e
        for name, (_, events) in objects.items()
        if "-lead/" in name or "-time/" in name
        for e in events
        if e["lead_id"] == run.person
    ]
    assert theirs and {e["type"] for e in theirs} == {ERASED_EVENT}
    batched = [
        e
        for name, (_, events) in objects.items()
        if "-jsonl/" in name or "-avro/" in name
        for e in events
        if e["lead_id"] == run.person and e["type"] == "source.accepted"
    ]
    assert len(batched) == 2
    assert all(str(e["vars"]["lead.email"]).startswith(f"enc:v1:{run.person}:") for e in batched)

    # The export that held the person is gone (its job says why); the other one is kept.
    with connect(settings) as conn:
        jobs = {
            row[0]: row[1:]
            for row in conn.execute("SELECT object_key, status, error FROM export_jobs")
        }
    assert jobs[kept.object_key] == ("complete", None)
    assert jobs[held.object_key][0] == "error" and "erase" in str(jobs[held.object_key][1])
    assert not any(held.object_key in name for name in objects)
    assert any(kept.object_key in name for name in objects)

    # The logs of the whole run (structlog and librdkafka on stderr, stdlib logging).
    out, err = capfd.readouterr()
    assert _hits(out + err + caplog.text) == []

    # No key for the erased lead ever again, and the readers say [erased].
    master = master_key_from_env()
    assert master is not None
    keys = LeadKeys(settings, master)
    try:
        assert keys.ensure(flow.id, [run.person])[run.person] is None
    finally:
        keys.close()
    with state_connect(settings) as conn:
        count = conn.execute(
            "SELECT count(*) FROM engine_lead_keys WHERE key_id = %s", (run.person,)
        ).fetchone()
    assert count == (0,)
    gone = client.get(f"/leads/{run.person}/events")
    assert gone.status_code == 200 and ERASED in gone.text and ERASED_EVENT in gone.text
    assert _hits(gone.text) == []

    # The others: intact, readable in clear with pii:read, from the rebuilt projection.
    for lead_id, lead in zip(run.others, OTHERS, strict=True):
        answer = client.get(f"/leads/{lead_id}/events")
        assert answer.status_code == 200
        assert str(lead["email"]) in answer.text and str(lead["last_name"]) in answer.text
        assert ERASED not in answer.text
