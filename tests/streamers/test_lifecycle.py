"""Destination lifecycle on the real stack: verification, activation, user disable/enable,
and clear, credential-free reasons for bad destinations."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.destinations import AzureCredentials, Destination, S3Credentials, SecretRef
from engine.flows import Flow
from engine.objects.contract import ObjectStore, PutResult, directory
from engine.objects.destination import open_store
from engine.settings import Settings
from streamers.lifecycle import (
    ACTIVATED,
    DEACTIVATED,
    Lifecycle,
    read_events,
    verify_flow,
)
from streamers.verification import probe_key
from tests.streamers.support import streaming_flow

pytestmark = pytest.mark.stack

PROBE = "leadflow_verification_"


@pytest.fixture
def schema_settings(stack: Settings, unique_id: str) -> Settings:
    """The stack's settings on a fresh schema (dropped by ``unique_id``'s cleanup)."""
    return stack.model_copy(update={"db_schema": unique_id})


@pytest.fixture
def flow(schema_settings: Settings, unique_id: str) -> Flow:
    return streaming_flow(schema_settings, unique_id, prefix=unique_id)


@pytest.fixture
def lifecycle(schema_settings: Settings) -> Iterator[Lifecycle]:
    opened = Lifecycle(schema_settings)
    yield opened
    opened.close()


def with_destinations(flow: Flow, *destinations: Destination) -> Flow:
    return flow.model_copy(update={"destinations": list(destinations)})


def events_of(settings: Settings, flow: Flow) -> list[tuple[str, str, str]]:
    return [(e.type, e.destination, e.reason) for e in read_events(settings, flow.id)]


class RecordingStore:
    """A real store that remembers the calls verification made."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.calls: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return self.store.name

    def put_if_absent(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        self.calls.append(("put", key))
        return self.store.put_if_absent(key, body, content_type, metadata)

    def get(self, key: str) -> bytes:
        self.calls.append(("get", key))
        return self.store.get(key)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.store.delete(key)

    def close(self) -> None:
        self.store.close()


def test_the_probe_is_named_by_flow_and_millisecond_under_the_prefix() -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    assert probe_key("/a/b/", "demo", at) == "a/b/leadflow_verification_demo_20260304050607891.txt"
    assert probe_key("", "demo", at) == "leadflow_verification_demo_20260304050607891.txt"


@pytest.mark.parametrize("kind", ["s3", "azure_blob"])
def test_activation_writes_reads_and_deletes_a_probe_then_records_activated(
    schema_settings: Settings, flow: Flow, kind: str
) -> None:
    destination = next(d for d in flow.destinations if d.kind == kind)
    recorded: list[RecordingStore] = []

    def opener(d: Destination, s: Settings) -> ObjectStore:
        recorded.append(RecordingStore(open_store(d, s, threads=1)))
        return recorded[0]  # type: ignore[return-value]

    lifecycle = Lifecycle(schema_settings, opener=opener)
    try:
        outcome = lifecycle.verify(flow, destination, by="test")
    finally:
        lifecycle.close()

    assert (outcome.state, outcome.changed, outcome.verification_failed) == ("active", True, False)
    calls = recorded[0].calls
    assert [c[0] for c in calls] == ["put", "get", "delete"]
    key = calls[0][1]
    assert len({c[1] for c in calls}) == 1
    assert key.startswith(f"{directory(flow.id)}{PROBE}{flow.id}_")
    assert key.endswith(".txt") and len(key.rsplit("_", 1)[1]) == len("YYYYMMDDHHMMSSmmm.txt")
    store = open_store(destination, schema_settings)
    try:
        assert not [k for k in store.list_keys(directory(flow.id)) if PROBE in k]
    finally:
        store.close()
    state = Lifecycle(schema_settings).state(flow.id, destination.key)
    assert state is not None and state.state == "active" and state.verified_at is not None
    assert events_of(schema_settings, flow) == [(ACTIVATED, destination.key, "verified at test")]


def test_bad_destinations_are_deactivated_with_the_reason_and_do_not_affect_good_ones(
    schema_settings: Settings, flow: Flow, lifecycle: Lifecycle
) -> None:
    good = flow.destinations[0]
    # SeaweedFS creates a missing bucket on the first PUT (AWS answers NoSuchBucket):
    # a name S3 refuses is the wrong bucket both answer alike.
    no_bucket = Destination(id="no-bucket", kind="s3", bucket="Leadflow-Missing")
    no_container = Destination(id="no-container", kind="azure_blob", bucket="no-such-container")
    off = Destination(id="off", kind="s3", bucket="Leadflow-Off", enabled=False)
    flow = with_destinations(flow, good, no_bucket, no_container, off)

    outcomes = {o.destination: o for o in verify_flow(lifecycle, flow, by="flow apply")}

    assert set(outcomes) == {good.key, "no-bucket", "no-container"}  # enabled: false is skipped
    assert (outcomes[good.key].state, outcomes[good.key].verification_failed) == ("active", False)
    for key, code in [("no-bucket", "InvalidBucketName"), ("no-container", "ContainerNotFound")]:
        outcome = outcomes[key]
        assert (outcome.state, outcome.verification_failed) == ("deactivated", True)
        assert outcome.reason is not None
        assert outcome.reason.startswith("verification failed: could not write the probe object")
        assert code in outcome.reason
    recorded = sorted(events_of(schema_settings, flow))
    assert [(t, d) for t, d, _ in recorded] == [
        (ACTIVATED, good.key), (DEACTIVATED, "no-bucket"), (DEACTIVATED, "no-container"),
    ]  # fmt: skip


def test_bad_credentials_and_missing_secrets_give_reasons_without_the_secret(
    schema_settings: Settings,
    flow: Flow,
    lifecycle: Lifecycle,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-" + base64.b32encode(os.urandom(15)).decode()
    account_key = base64.b64encode(os.urandom(64)).decode()
    monkeypatch.setenv("LEADFLOW_TEST_KEY_ID", "leadflow")
    monkeypatch.setenv("LEADFLOW_TEST_SECRET", secret)
    monkeypatch.delenv("LEADFLOW_TEST_UNSET", raising=False)
    connection = tmp_path / "azure.conn"
    connection.write_text(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={account_key};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    )
    bucket = schema_settings.s3_bucket
    bad_s3 = Destination(
        id="bad-s3", kind="s3", bucket=bucket, prefix=flow.id,
        credentials=S3Credentials(
            access_key_id=SecretRef(env="LEADFLOW_TEST_KEY_ID"),
            secret_access_key=SecretRef(env="LEADFLOW_TEST_SECRET"),
        ),
    )  # fmt: skip
    bad_azure = Destination(
        id="bad-azure", kind="azure_blob", bucket=schema_settings.azure_container,
        credentials=AzureCredentials(connection_string=SecretRef(file=str(connection))),
    )  # fmt: skip
    unset = Destination(
        id="unset", kind="azure_blob", bucket=schema_settings.azure_container,
        credentials=AzureCredentials(connection_string=SecretRef(env="LEADFLOW_TEST_UNSET")),
    )  # fmt: skip
    flow = with_destinations(flow, bad_s3, bad_azure, unset)

    outcomes = {o.destination: o for o in verify_flow(lifecycle, flow, by="flow apply")}

    reasons = {key: o.reason or "" for key, o in outcomes.items()}
    assert all(o.state == "deactivated" and o.verification_failed for o in outcomes.values())
    assert "SignatureDoesNotMatch" in reasons["bad-s3"] or "AccessDenied" in reasons["bad-s3"]
    assert "HTTP 403" in reasons["bad-azure"]
    assert reasons["unset"] == (
        "verification failed: cannot open azure_blob:leadflow-events/: "
        "secret env LEADFLOW_TEST_UNSET is not set"
    )
    out, err = capfd.readouterr()
    everything = "\n".join(
        [out, err, caplog.text, *reasons.values(), *(str(e) for e in read_events(schema_settings))]
    )
    for value in (secret, account_key, account_key[:20]):
        assert value not in everything


def test_the_user_disables_and_enables_and_apply_never_overrides_disabled(
    schema_settings: Settings, flow: Flow, lifecycle: Lifecycle
) -> None:
    destination = flow.destinations[0]
    assert lifecycle.verify(flow, destination, by="flow apply").state == "active"

    disabled = lifecycle.disable(flow.id, destination)
    assert (disabled.state, disabled.changed) == ("disabled", True)
    again = lifecycle.verify(flow, destination, by="flow apply")
    assert (again.state, again.changed) == ("disabled", False)
    enabled = lifecycle.enable(flow, destination)
    assert (enabled.state, enabled.changed) == ("active", True)

    assert events_of(schema_settings, flow) == [
        (ACTIVATED, destination.key, "verified at flow apply"),
        (DEACTIVATED, destination.key, "disabled by the user"),
        (ACTIVATED, destination.key, "enabled by the user"),
    ]


def test_events_have_the_documented_shape(
    schema_settings: Settings, flow: Flow, lifecycle: Lifecycle
) -> None:
    destination = flow.destinations[0]
    lifecycle.disable(flow.id, destination)
    [event] = read_events(schema_settings, flow.id)
    assert set(event.__slots__) == {"id", "type", "flow_id", "destination", "reason", "at", "data"}
    assert event.type == "event_destination.deactivated"
    assert event.at.endswith("Z") and len(event.id) == 26
    # The resource object: the destination as the flow gives it, and its new state.
    assert event.data == {
        "flow_id": flow.id, "key": destination.key, "name": destination.name,
        **destination.model_dump(mode="json"),
        "state": "disabled", "reason": "disabled by the user",
    }  # fmt: skip
