"""``leadflow streamer status``: state, lag, last object and last error per destination."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from engine.cli import app
from engine.flows import Flow
from engine.objects.errors import DestinationError
from engine.runtime.kafka.config import admin_config, consumer_config
from engine.settings import Settings, get_settings
from streamers.destination_observer import DestinationObserver
from streamers.lifecycle import Lifecycle
from streamers.metrics import StreamerMetrics
from streamers.status import destination_status
from streamers.streamer import consumer_group_id
from streamers.topic_offsets import ends, flow_partitions
from tests.factories import write_flow
from tests.streamers.support import create_topics, make_events, produce_events, streaming_flow

pytestmark = pytest.mark.stack


@pytest.fixture
def schema_settings(
    stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """A fresh schema, also for the CLI (which reads the process settings)."""
    monkeypatch.setenv("LEADFLOW_DB_SCHEMA", unique_id)
    get_settings.cache_clear()
    yield stack.model_copy(update={"db_schema": unique_id})
    get_settings.cache_clear()


def commit_to_end(settings: Settings, flow: Flow, group: str) -> None:
    admin = AdminClient(admin_config(settings))
    heads = ends(admin, flow_partitions(admin, flow.id))
    consumer = Consumer(consumer_config(settings, group))
    try:
        offsets = [TopicPartition(t, p, o) for (t, p), o in heads.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def test_status_shows_state_lag_last_object_and_last_error(
    schema_settings: Settings, unique_id: str, tmp_path: Path
) -> None:
    flow = streaming_flow(schema_settings, unique_id, prefix=unique_id)
    s3, azure = flow.destinations
    create_topics(schema_settings, flow)
    events = make_events(flow.id, 2)
    produce_events(schema_settings, flow.id, events)
    lifecycle = Lifecycle(schema_settings)
    lifecycle.verify(flow, s3, by="flow apply")
    lifecycle.disable(flow.id, azure)
    observer = DestinationObserver(lifecycle, flow.id, s3, activity_every_s=0)
    observer.written(f"{unique_id}/L1/E1.json", 10, created=True)
    observer.failed(DestinationError(s3.name, "SlowDown (HTTP 503) on PutObject"))
    observer.close()
    lifecycle.close()
    commit_to_end(schema_settings, flow, consumer_group_id(flow.id, s3))

    metrics = StreamerMetrics()
    rows = {r.destination: r for r in destination_status(schema_settings, [flow], metrics=metrics)}

    assert (rows[s3.key].state, rows[s3.key].lag) == ("active", 0)
    assert rows[s3.key].last_object_key == f"{unique_id}/L1/E1.json"
    assert rows[s3.key].last_error == "SlowDown (HTTP 503) on PutObject"
    # Never committed: everything is behind (the streamer starts at the earliest offset).
    assert (rows[azure.key].state, rows[azure.key].lag) == ("disabled", len(events))
    assert rows[azure.key].reason == "disabled by the user"
    assert metrics.lag.labels(flow=flow.id, destination=azure.key)._value.get() == len(events)

    flow_file = write_flow(tmp_path / "flow.yaml", flow)
    result = CliRunner().invoke(
        app, ["streamer", "status", flow.id, "-f", str(flow_file)], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    s3_line = next(line for line in lines if s3.key in line)
    azure_line = next(line for line in lines if azure.key in line)
    assert "active" in s3_line and f"{unique_id}/L1/E1.json" in s3_line
    assert "SlowDown (HTTP 503) on PutObject" in s3_line
    assert "disabled" in azure_line and f" {len(events)} " in azure_line
