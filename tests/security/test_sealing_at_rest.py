"""Encryption at rest, proved on the real stack: a flow that declares sensitive fields runs
end to end, and no topic (raw bytes, aborted transactions included) and no Postgres row
holds a clear SSN, date of birth or declared field; the buyer still gets the clear
values; the API shows them to ``pii:read`` and masks them for others; and deleting a
lead's key (crypto-shredding) makes the lead ``[erased]`` everywhere it is read."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastapi.testclient import TestClient
from psycopg import sql
from typer.testing import CliRunner

from engine.access.store import create_key
from engine.api.app import create_app
from engine.cli import app as cli_app
from engine.demo.buyer import BuyerServer
from engine.flows import Flow, parse_flow
from engine.ops import erase_cli
from engine.ops.submit import publish_leads
from engine.runtime.kafka.config import consumer_config
from engine.runtime.sealer import LeadSealer
from engine.runtime.step_worker import prepare_topics
from engine.sealing import ERASED, master_key_from_env, new_master_key_text
from engine.settings import Settings
from engine.state.keys import find_person
from engine.state.postgres import connect as state_connect
from projectors.batch import Record, build_batch
from projectors.generations import migrate_database
from projectors.store import connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import DEMO_FLOW
from tests.kafka_helpers import run_steps, wait_for_completion
from tests.projectors.test_search import wait_visible

pytestmark = pytest.mark.stack

GOOD = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone_1": "(512) 555-0123",
    "state": "TX",
    "tcpa_consent": True,
}
FIRST = {
    **GOOD,
    "email": "ada@example.com",
    "ssn": "123-45-6789",
    "dob": "1984-07-21",
    "income": "IncomeSecret98765",
}
SECOND = {
    **GOOD,
    "email": "grace@example.com",
    "ssn": "234-56-7890",
    "dob": "1991-03-14",
    "income": "IncomeSecret12345",
}
CLEAR: dict[str, tuple[str, ...]] = {
    "first": ("123-45-6789", "123456789", "1984-07-21", "IncomeSecret98765"),
    "second": ("234-56-7890", "234567890", "1991-03-14", "IncomeSecret12345"),
}
# Not JSON at all: the source rejects it, and it is sealed whole all the same.
BROKEN = '{"first_name": "Broken", "ssn": "456-78-9012", "dob": "1970-01-02"'
CLEAR["broken"] = ("456-78-9012", "1970-01-02")
EVERY_CLEAR = CLEAR["first"] + CLEAR["second"] + CLEAR["broken"]


def _flow(unique_id: str, buyer_url: str) -> Flow:
    text = DEMO_FLOW.read_text(encoding="utf-8")
    text = text.replace("id: demo\n", f"id: {unique_id}\n", 1)
    text = text.replace("url: http://127.0.0.1:8765/leads", f"url: {buyer_url}")
    text = text.replace("prefix: demo", f"prefix: {unique_id}")
    text = text.replace("version: 1\n", "version: 1\nsensitive_fields: [income]\n", 1)
    text = text.replace(
        "        - {name: trustedform_cert_url}\n",
        "        - {name: trustedform_cert_url}\n        - {name: ssn, type: ssn}\n"
        "        - {name: dob, type: date}\n        - {name: income}\n",
    )
    text = text.replace(
        "        state: lead.state\n",
        "        state: lead.state\n        dob: lead.dob\n        income: lead.income\n",
    )
    return parse_flow(text, f"{unique_id}.yaml")


def _raw_records(settings: Settings, unique_id: str) -> list[tuple[str, int, int, bytes]]:
    """Every record of every topic of the flow, uncommitted and aborted ones too."""
    consumer = Consumer(
        consumer_config(
            settings,
            f"{unique_id}-raw",
            **{"enable.partition.eof": True, "isolation.level": "read_uncommitted"},
        )
    )
    topics = [t for t in consumer.list_topics(timeout=10).topics if unique_id in t]
    metadata = consumer.list_topics(timeout=10).topics
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata[t].partitions]
    consumer.assign(parts)
    pending = {(tp.topic, tp.partition) for tp in parts}
    out: list[tuple[str, int, int, bytes]] = []
    deadline = time.monotonic() + 20
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error():
                pending.discard((msg.topic(), msg.partition()))
                continue
            out.append(
                (
                    str(msg.topic()),
                    int(msg.partition() or 0),
                    int(msg.offset() or 0),
                    msg.value() or b"",
                )
            )
    consumer.close()
    return out


def _every_row(conn: psycopg.Connection[Any], schema: str) -> str:
    """Every row of every table in the flow's schemas, as text."""
    tables = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE (table_schema = %s OR table_schema LIKE %s) AND table_type = 'BASE TABLE'",
        (schema, schema + "\\_%"),
    ).fetchall()
    texts: list[str] = []
    for table_schema, table in tables:
        query = sql.SQL("SELECT t::text FROM {}.{} t").format(
            sql.Identifier(table_schema), sql.Identifier(table)
        )
        texts.extend(row[0] for row in conn.execute(query).fetchall())
    return "\n".join(texts)


@pytest.fixture
def sealed_run(
    stack: Settings, unique_id: str, buyer: BuyerServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Flow, list[str]]:
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", new_master_key_text())
    settings = stack.model_copy(
        update={
            "db_schema": unique_id,
            "feedback_topic": f"leadflow.{unique_id}.feedback",
            "export_worker_in_api": False,
            "api_key_cache_seconds": 0.0,
        }
    )
    flow = _flow(unique_id, buyer.url)
    prepare_topics(settings, flow)
    stop = threading.Event()
    threads = run_steps(settings, flow, stop)
    sealer = LeadSealer.for_flow(flow, settings)
    assert sealer is not None
    try:
        ids = publish_leads(settings, flow.id, [FIRST, SECOND, BROKEN], sealer)
        wait_for_completion(settings, flow, len(ids))
    finally:
        sealer.close()
        stop.set()
        for t in threads:
            t.join(30)
    return settings, flow, ids


def test_no_topic_and_no_table_holds_a_clear_sensitive_value(
    sealed_run: tuple[Settings, Flow, list[str]], buyer: BuyerServer
) -> None:
    settings, flow, ids = sealed_run
    records = _raw_records(settings, flow.id)
    topics = {topic for topic, *_ in records}
    assert f"leadflow.{flow.id}.intake" in topics and len(topics) >= 4
    for topic, _, offset, value in records:
        leaked = [c for c in EVERY_CLEAR if c.encode() in value]
        assert leaked == [], f"{topic}@{offset} holds {leaked}"
    assert any(b"enc:v1:" in value for *_, value in records)

    # The buyer got the clear values: sealing is at rest, not on the wire to a buyer.
    bodies = [b for b in buyer.bodies if b.get("email") == "ada@example.com"]
    assert bodies and bodies[-1]["dob"] == "1984-07-21"
    assert bodies[-1]["income"] == "IncomeSecret98765"

    # The timeline, projected as the projector does, holds no clear value either.
    migrate_database(settings)
    codec = EventCodec()
    events = [
        Record(topic, partition, offset, value)
        for topic, partition, offset, value in records
        if ".events." in topic
    ]
    with connect(settings) as conn:
        write_batch(conn, "test", build_batch(codec, events))
        stored = _every_row(conn, settings.db_schema)
    assert ids[0] in stored
    assert [c for c in EVERY_CLEAR if c in stored] == []

    # The person index finds the lead by email, holding no email.
    master = master_key_from_env()
    assert master is not None
    with state_connect(settings) as conn, conn.cursor() as cur:
        assert find_person(cur, master, "email", " ADA@example.com") == [ids[0]]
        index = cur.execute("SELECT i::text FROM engine_person_index i").fetchall()
    assert len(index) == 4 and not any("example.com" in row[0] for row in index)


def test_the_api_opens_for_pii_read_masks_for_others_and_shows_erased_after_the_key_goes(
    sealed_run: tuple[Settings, Flow, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, flow, (first, second, _) = sealed_run
    migrate_database(settings)
    codec = EventCodec()
    events = [
        Record(topic, partition, offset, value)
        for topic, partition, offset, value in _raw_records(settings, flow.id)
        if ".events." in topic
    ]
    with connect(settings) as conn:
        write_batch(conn, "test", build_batch(codec, events))
        wait_visible(conn)
    _, pii_key = create_key(settings, "pii", ["events:read", "pii:read", "exports"])
    _, reader_key = create_key(settings, "reader", ["events:read", "exports"])
    app = create_app(settings)
    pii = TestClient(app, headers={"Authorization": f"Bearer {pii_key}"})
    reader = TestClient(app, headers={"Authorization": f"Bearer {reader_key}"})

    clear = pii.get(f"/leads/{first}/events")
    assert clear.status_code == 200
    assert "1984-07-21" in clear.text and "IncomeSecret98765" in clear.text
    assert "enc:v1:" not in clear.text
    masked = reader.get(f"/leads/{first}/events")
    assert masked.status_code == 200
    assert [c for c in EVERY_CLEAR if c in masked.text] == []
    assert "1984-**-**" in masked.text and "enc:v1:" not in masked.text
    export = pii.get(f"/flows/{flow.id}/events/export", params={"format": "jsonl"})
    assert export.status_code == 200 and "IncomeSecret98765" in export.text
    # Sealing is deterministic per lead: consecutive snapshots differ only where the data did.
    changes = pii.get(f"/leads/{first}/changes").json()
    assert changes and all(
        not k.startswith(("lead.dob", "lead.ssn", "lead.income"))
        for c in changes
        for k in c["changed"]
    ), changes
    timeline = clear.json()
    timeline = timeline if isinstance(timeline, list) else timeline["events"]
    accepted = next(e["id"] for e in timeline if e["type"] == "source.accepted")
    ui_event = f"/ui/api/events/{accepted}"
    ui_clear, ui_masked = pii.get(ui_event), reader.get(ui_event)
    assert ui_clear.status_code == ui_masked.status_code == 200
    assert "1984-07-21" in ui_clear.text and "enc:v1:" not in ui_clear.text
    assert [c for c in EVERY_CLEAR if c in ui_masked.text] == []

    # Crypto-shredding: `leadflow erase --email` finds the first lead through the keyed
    # hash and deletes its key; its values read [erased] everywhere. Again: nothing more.
    monkeypatch.setattr(erase_cli, "get_settings", lambda: settings)
    monkeypatch.setattr(erase_cli, "read_flows", lambda _settings: [flow])  # not applied here
    runner = CliRunner()
    done = runner.invoke(cli_app, ["erase", "--email", "Ada@Example.com"])
    assert done.exit_code == 0, done.output
    assert first in done.stdout and "1 key(s) deleted now" in done.output
    again = runner.invoke(cli_app, ["erase", "--lead", first])
    assert again.exit_code == 0 and "0 key(s) deleted now" in again.output
    unknown = runner.invoke(cli_app, ["erase", "--email", "nobody@example.com"])
    assert unknown.exit_code == 1 and "not found" in unknown.output
    # Nothing links the person to the lead any more; the other lead is still indexed.
    gone_again = runner.invoke(cli_app, ["erase", "--email", "ada@example.com"])
    assert gone_again.exit_code == 1 and "not found" in gone_again.output
    with state_connect(settings) as conn:
        indexed = {r[0] for r in conn.execute("SELECT lead_id FROM engine_person_index")}
    assert indexed == {second}
    gone = pii.get(f"/leads/{first}/events")
    assert gone.status_code == 200 and ERASED in gone.text
    assert [c for c in CLEAR["first"] if c in gone.text] == []
    assert ERASED in reader.get(f"/leads/{first}/events").text
    ui_gone = pii.get(ui_event)
    assert ERASED in ui_gone.text and [c for c in CLEAR["first"] if c in ui_gone.text] == []
    export = pii.get(f"/flows/{flow.id}/events/export", params={"format": "jsonl"})
    assert export.status_code == 200
    assert [c for c in CLEAR["first"] if c in export.text] == []
    assert "IncomeSecret12345" in export.text  # the other lead is intact
    assert "1991-03-14" in pii.get(f"/leads/{second}/events").text


def test_a_producer_that_writes_clear_leads_itself_gets_them_sealed_from_the_source_on(
    stack: Settings, unique_id: str, buyer: BuyerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADFLOW_MASTER_KEY", new_master_key_text())
    settings = stack.model_copy(update={"db_schema": unique_id})
    flow = _flow(unique_id, buyer.url)
    prepare_topics(settings, flow)
    stop = threading.Event()
    threads = run_steps(settings, flow, stop)
    try:
        [lead_id] = publish_leads(settings, flow.id, [FIRST])  # no sealer: its own producer
        wait_for_completion(settings, flow, 1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    for topic, _, offset, value in _raw_records(settings, flow.id):
        if not topic.endswith(".intake"):  # what the producer wrote is its own
            assert [c for c in CLEAR["first"] if c.encode() in value] == [], f"{topic}@{offset}"
    master = master_key_from_env()
    assert master is not None
    with state_connect(settings) as conn, conn.cursor() as cur:
        assert find_person(cur, master, "phone", "512-555-0123") == [lead_id]
