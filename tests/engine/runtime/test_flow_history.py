"""A flow's whole history: every applied version and its deletion, as system events in
Postgres and on the uncompacted ``leadflow.system-events``, beside the compacted registry
(which keeps only the latest definition)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine.flows import Flow
from engine.runtime.kafka.compacted import TopicReader
from engine.runtime.outbox_relay import SYSTEM_EVENTS_TOPIC, OutboxRelay, OutboxUnpublishedError
from engine.runtime.registry import UnknownFlowError, apply_flow, delete_flow, read_flows
from engine.settings import Settings
from engine.state.outbox import published_events
from engine.state.postgres import connect, migrate_state
from tests.factories import make_flow

pytestmark = pytest.mark.stack


@pytest.fixture
def schema_settings(stack: Settings, unique_id: str) -> Settings:
    return stack.model_copy(update={"db_schema": unique_id})


def history_on_the_topic(settings: Settings, flow_id: str) -> list[dict[str, Any]]:
    reader = TopicReader(settings, [(SYSTEM_EVENTS_TOPIC, 0)], "test")
    try:
        records, complete = reader.read_to_end(20.0)
    finally:
        reader.close()
    assert complete
    bodies = [orjson.loads(r.value() or b"{}") for r in records]
    return [b for b in bodies if b.get("subject") == f"flows/{flow_id}"]


def renamed(flow: Flow, name: str) -> Flow:
    return flow.model_copy(update={"name": name})


def test_every_version_and_the_deletion_are_kept_with_their_definitions(
    schema_settings: Settings, unique_id: str
) -> None:
    flow = make_flow(unique_id, "http://127.0.0.1:9/leads")
    v1 = apply_flow(schema_settings, flow).flow
    assert apply_flow(schema_settings, flow).type == "flow.unchanged"  # no event
    v2 = apply_flow(schema_settings, renamed(flow, "Second")).flow
    delete_flow(schema_settings, flow.id, must_exist=True)

    assert all(f.id != flow.id for f in read_flows(schema_settings))  # gone from the registry
    with connect(schema_settings) as conn:
        kept = published_events(conn, types=["flow.created", "flow.updated", "flow.deleted"])
    assert [(e.type, e.flow_id, e.subject) for e in kept] == [
        ("flow.created", flow.id, f"flows/{flow.id}"),
        ("flow.updated", flow.id, f"flows/{flow.id}"),
        ("flow.deleted", flow.id, f"flows/{flow.id}"),
    ]
    # Each carries the resource object: the definition as it was (deleted: the last one).
    v1_json, v2_json = v1.model_dump(mode="json"), v2.model_dump(mode="json")
    assert [e.data for e in kept] == [v1_json, v2_json, v2_json]
    assert (v1_json["version"], v2_json["version"], v2_json["name"]) == (1, 2, "Second")

    on_topic = history_on_the_topic(schema_settings, flow.id)
    assert [(b["id"], b["type"], b["data"]) for b in on_topic] == [
        (e.id, e.type, e.data) for e in kept
    ]


def test_deleting_a_flow_that_is_not_applied_records_nothing(
    schema_settings: Settings, unique_id: str
) -> None:
    with pytest.raises(UnknownFlowError):
        delete_flow(schema_settings, unique_id, must_exist=True)
    delete_flow(schema_settings, unique_id)  # nothing to delete: no event
    migrate_state(schema_settings)
    with connect(schema_settings) as conn:
        assert published_events(conn) == []


def test_kafka_lost_after_an_apply_commits_the_relay_records_it_later_once(
    schema_settings: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The apply's event is committed in Postgres, then Kafka is gone: the command says the
    change waits; the relay role later writes the registry and the history, once each."""
    flow = make_flow(unique_id, "http://127.0.0.1:9/leads")
    away = schema_settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})

    def relay_without_kafka(_: Settings, **__: object) -> OutboxRelay:
        return OutboxRelay(away, timeout=2.0)

    monkeypatch.setattr("engine.runtime.registry.OutboxRelay", relay_without_kafka)
    with pytest.raises(OutboxUnpublishedError, match="relay role publishes them"):
        apply_flow(schema_settings, flow)
    monkeypatch.undo()
    assert all(f.id != flow.id for f in read_flows(schema_settings))
    assert history_on_the_topic(schema_settings, flow.id) == []

    assert OutboxRelay(schema_settings).publish_pending() == 1  # the relay role's next pass

    try:
        assert [f.version for f in read_flows(schema_settings) if f.id == flow.id] == [1]
        [created] = history_on_the_topic(schema_settings, flow.id)
        assert (created["type"], created["data"]) == ("flow.created", flow.model_dump(mode="json"))
        assert OutboxRelay(schema_settings).publish_pending() == 0
        assert len(history_on_the_topic(schema_settings, flow.id)) == 1
    finally:
        delete_flow(schema_settings, flow.id)
