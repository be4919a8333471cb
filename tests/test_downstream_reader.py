"""A downstream service reads leadflow's events with nothing of leadflow's code.

``leadflow run`` in registry mode (``LEADFLOW_EVENT_ENCODING=registry``) takes leads
through the real steps; a plain confluent-kafka consumer with confluent-kafka's own
``AvroDeserializer`` and ``SchemaRegistryClient`` (pointed at the stack's Apicurio) reads
every event topic of the flow, and what it reads is the timeline Postgres holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from engine.demo.buyer import BuyerServer
from engine.ops.submit import publish_leads
from engine.settings import Settings
from tests.factories import make_flow, write_flow
from tests.test_end_to_end import LEADS, _timelines
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


@pytest.fixture
def db_schema(stack: Settings, unique_id: str) -> Iterator[str]:
    yield unique_id
    with psycopg.connect(stack.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{unique_id}" CASCADE')


def read_events_downstream(settings: Settings, pattern: str, count: int) -> list[Any]:
    """What a team's own service would write: subscribe by pattern, deserialize by id."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"downstream-{pattern}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    consumer.subscribe([pattern])
    out: list[Any] = []
    with SchemaRegistryClient({"url": settings.schema_registry_url, "timeout": 10}) as registry:
        deserialize = AvroDeserializer(registry)

        def more() -> int:
            for msg in consumer.consume(100, timeout=1):
                if msg.error():
                    continue
                ctx = SerializationContext(msg.topic() or "", MessageField.VALUE)
                headers = dict(msg.headers() or [])
                out.append((deserialize(msg.value(), ctx), headers, msg.value()))
            return len(out)

        wait_until(more, 60, f"{count} events read downstream", until=lambda n: n >= count)
    consumer.close()
    return out


def test_a_downstream_reader_sees_the_timeline_postgres_holds(
    stack: Settings, unique_id: str, buyer: BuyerServer, db_schema: str, tmp_path: Path
) -> None:
    flow = make_flow(unique_id, buyer.url)
    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    env = {
        **os.environ,
        "LEADFLOW_EVENT_ENCODING": "registry",
        "LEADFLOW_DB_SCHEMA": db_schema,
        "LEADFLOW_PROJECTOR_NAME": f"timeline-{unique_id}",
        "LEADFLOW_PROJECTOR_PATTERN": rf"^leadflow\.{unique_id}\.events\..+$",
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_FEEDBACK_TOPIC": f"leadflow.{unique_id}.feedback",
    }
    leadflow = [sys.executable, "-m", "engine"]
    subprocess.run([*leadflow, "db", "migrate"], env=env, check=True, capture_output=True)
    log_file = (tmp_path / "workers.log").open("wb")
    workers = subprocess.Popen(
        [*leadflow, "run", "--flow-file", str(flow_file)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    settings = Settings(db_schema=db_schema)
    expected = sum(len(types) for _, types in LEADS)
    try:
        ids = publish_leads(stack, flow.id, [lead for lead, _ in LEADS])
        timelines = wait_until(
            lambda: _timelines(settings, ids),
            120,
            f"{expected} events in Postgres",
            until=lambda seen: sum(map(len, seen.values())) >= expected,
            every=1,
        )
        read = read_events_downstream(stack, rf"^leadflow\.{unique_id}\.events\..+", expected)
    finally:
        os.killpg(workers.pid, signal.SIGTERM)
        workers.wait(60)
        log_file.close()
    assert workers.returncode == 0, (tmp_path / "workers.log").read_text()[-3000:]

    # Every event in the wire format, saying so in its header.
    assert {(raw[0], headers.get("leadflow-encoding")) for _, headers, raw in read} == {
        (0, b"registry")
    }
    downstream = {event["id"]: event for event, _, _ in read}
    assert len(downstream) == len(read) == expected  # no duplicate, nothing missing
    postgres = {e["id"]: e for timeline in timelines.values() for e in timeline}
    assert set(downstream) == set(postgres)
    for event_id, event in downstream.items():
        row = postgres[event_id]
        for field in ("type", "outcome", "lead_id", "step_id", "total_ms", "lag_ms", "ms"):
            assert event[field] == row[field], (event_id, field)
    for lead_id, (_, types) in zip(ids, LEADS, strict=True):
        mine = sorted(
            (e for e in downstream.values() if e["lead_id"] == lead_id), key=lambda e: e["id"]
        )
        assert [e["type"] for e in mine] == types
