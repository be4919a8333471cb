"""Destinations as data: credentials only by reference, formats and layouts that fit together,
and a store opened with referenced credentials on the real S3 and Azure servers."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.destinations import Destination, SecretRef
from engine.errors import ConfigError
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError
from engine.settings import Settings


def s3(**fields: object) -> Destination:
    return Destination.model_validate({"kind": "s3", "bucket": "leadflow-events", **fields})


def test_a_secret_written_into_the_flow_is_refused_only_references_are_taken() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        s3(credentials={"access_key_id": "AKIA", "secret_access_key": "hunter2"})
    with pytest.raises(ValidationError, match="exactly one of env"):
        SecretRef.model_validate({"env": "A", "file": "/b"})


def test_a_reference_resolves_from_the_environment_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHIVE_KEY", "from-env")
    (tmp_path / "key").write_text("from-file\n")

    assert SecretRef(env="ARCHIVE_KEY").resolve().get_secret_value() == "from-env"
    assert SecretRef(file=str(tmp_path / "key")).resolve().get_secret_value() == "from-file"


def test_a_missing_secret_names_its_reference_and_never_a_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NOT_THERE", raising=False)
    with pytest.raises(ConfigError, match="secret env NOT_THERE is not set"):
        SecretRef(env="NOT_THERE").resolve()
    with pytest.raises(ConfigError, match=f"secret file {tmp_path}/nope cannot be read"):
        SecretRef(file=str(tmp_path / "nope")).resolve()


def test_batched_formats_are_time_partitioned_and_json_defaults_to_the_lead_layout() -> None:
    assert s3().effective_layout == "lead"
    assert s3(layout="time").effective_layout == "time"
    assert s3(format="jsonl.gz").effective_layout == "time"
    with pytest.raises(ValidationError, match="layout is time"):
        s3(format="avro", layout="lead")


def test_credentials_must_fit_the_kind_and_destinations_of_a_flow_must_differ() -> None:
    with pytest.raises(ValidationError, match="azure_blob destination takes connection_string"):
        Destination.model_validate(
            {
                "kind": "azure_blob",
                "bucket": "c-1",
                "credentials": {
                    "access_key_id": {"env": "A"},
                    "secret_access_key": {"env": "B"},
                },
            }
        )
    assert s3(prefix="Demo/2026").key == "s3-leadflow-events-demo-2026"
    assert s3(id="archive").key == "archive"


@pytest.mark.stack
def test_a_store_opened_with_referenced_credentials_writes_and_wrong_ones_fail_without_leaking(
    stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_S3_KEY_ID", "leadflow")
    monkeypatch.setenv("T_S3_SECRET", "leadflow-local-secret")
    monkeypatch.setenv("T_S3_WRONG", "not-the-secret-4711")
    monkeypatch.setenv("T_AZ", stack.azure_storage_connection_string.get_secret_value())
    key = f"t-{uuid.uuid4().hex}/probe.json"
    good = {"access_key_id": {"env": "T_S3_KEY_ID"}, "secret_access_key": {"env": "T_S3_SECRET"}}
    wrong = {**good, "secret_access_key": {"env": "T_S3_WRONG"}}
    azure = Destination.model_validate(
        {
            "kind": "azure_blob",
            "bucket": stack.azure_container,
            "credentials": {"connection_string": {"env": "T_AZ"}},
        }
    )

    for destination in (s3(bucket=stack.s3_bucket, credentials=good), azure):
        store = open_store(destination, stack)
        try:
            assert store.put_if_absent(key, b"{}", "application/json") == "created"
            assert store.get(key) == b"{}"
            store.delete(key)
        finally:
            store.close()

    refused = open_store(s3(bucket=stack.s3_bucket, credentials=wrong), stack)
    with pytest.raises(DestinationError) as caught:
        refused.put_if_absent(key, b"{}", "application/json")
    refused.close()
    assert "not-the-secret-4711" not in str(caught.value)
