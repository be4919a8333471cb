"""``--json`` on the listing commands: the whole names, machine-readable, on stdout.

Tables printed to a pipe or a narrow terminal cut group and topic names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from typer.testing import CliRunner

from engine import cli
from engine.ops import projections_cli
from engine.runtime.kafka.config import admin_config, consumer_config, producer_config
from engine.runtime.registry import apply_flow, delete_flow
from engine.settings import Settings
from projectors.exports.jobs import create_job, migrate_exports
from projectors.generations import migrate_database
from projectors.selection import ExportQuery
from projectors.store import connect
from tests.factories import make_flow, write_flow

pytestmark = pytest.mark.stack

NARROW = {"COLUMNS": "40"}  # where a table would cut every name


def leadflow_json(*args: str) -> Any:
    result = CliRunner().invoke(cli.app, [*args, "--json"], env=NARROW)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


@pytest.fixture
def group(stack: Settings, unique_id: str) -> Iterator[tuple[str, str]]:
    """A group with a long name that committed 1 of the 3 records of a topic's partition 0."""
    topic = f"leadflow.{unique_id}.events.a-step-with-a-rather-long-name"
    name = f"leadflow.{unique_id}.step.a-step-with-a-rather-long-name"
    admin = AdminClient(admin_config(stack))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    producer = Producer(producer_config(stack))
    for _ in range(3):
        producer.produce(topic, value=b"v", partition=0)
    assert producer.flush(10) == 0
    consumer = Consumer(consumer_config(stack, name))
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    consumer.close()
    yield name, topic
    admin.delete_consumer_groups([name], request_timeout=10)[name].result()


def test_offsets_json_holds_every_group_and_partition_uncut(group: tuple[str, str]) -> None:
    name, topic = group
    assert leadflow_json("offsets", "--group-prefix", name) == [
        {
            "group": name,
            "state": "EMPTY",
            "members": 0,
            "lag": 2,
            "partitions": [{"topic": topic, "partition": 0, "committed": 1, "end": 3}],
        }
    ]


def test_flow_list_json_holds_the_applied_flows(stack: Settings, unique_id: str) -> None:
    apply_flow(stack, make_flow(unique_id, "http://127.0.0.1:9/leads"))
    try:
        flows = {f["id"]: f for f in leadflow_json("flow", "list")}
    finally:
        delete_flow(stack, unique_id)
    assert flows[unique_id] == {
        "id": unique_id,
        "name": "Demo solar leads",
        "version": 1,
        "steps": [
            {"id": "source", "kind": "source"},
            {"id": "service-area", "kind": "filter"},
            {"id": "premier", "kind": "recipient"},
        ],
        "destinations": [
            {"key": f"s3-leadflow-events-{unique_id}", "kind": "s3", "enabled": True},
            {
                "key": f"azure-blob-leadflow-events-{unique_id}",
                "kind": "azure_blob",
                "enabled": True,
            },
        ],
    }


def test_streamer_status_json_has_a_row_per_destination(
    stack: Settings, unique_id: str, tmp_path: Path
) -> None:
    flow_file = write_flow(tmp_path / "flow.yaml", make_flow(unique_id, "http://127.0.0.1:9/x"))
    rows = leadflow_json("streamer", "status", unique_id, "-f", str(flow_file))
    assert [(r["flow_id"], r["destination"], r["state"]) for r in rows] == [
        (unique_id, f"s3-leadflow-events-{unique_id}", "unverified"),
        (unique_id, f"azure-blob-leadflow-events-{unique_id}", "unverified"),
    ]
    assert set(rows[0]) == {
        "flow_id", "destination", "name", "state", "reason", "lag", "last_object_key",
        "last_object_at", "last_error", "last_error_at",
    }  # fmt: skip


@pytest.fixture
def schema_settings(stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = stack.model_copy(update={"db_schema": unique_id})
    migrate_database(settings)
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(projections_cli, "get_settings", lambda: settings)
    return settings


def test_projections_json_lists_every_generation(schema_settings: Settings, unique_id: str) -> None:
    found = leadflow_json("projections")
    assert [(g["projection"], g["number"], g["state"], g["schema"]) for g in found] == [
        ("analytics", 1, "active", f"{unique_id}_analytics_1"),
        ("timeline", 1, "active", f"{unique_id}_timeline_1"),
    ]


def test_exports_list_json_lists_the_jobs_as_the_api_shows_them(
    schema_settings: Settings,
) -> None:
    migrate_exports(schema_settings)
    query = ExportQuery.model_validate({"flow_id": "f", "format": "jsonl"})
    with connect(schema_settings) as conn:
        job = create_job(conn, schema_settings, query, "ops")
    assert leadflow_json("exports", "list") == [job.as_json()]
