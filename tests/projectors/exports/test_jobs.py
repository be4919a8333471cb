"""Export jobs on the real stack: created, processing, complete (the file really in SeaweedFS
or Azurite) or error; downloads recorded; jobs of dead workers taken over."""

from __future__ import annotations

import base64
import gzip
import os
import threading
import uuid
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from fastapi.testclient import TestClient
from pydantic import SecretStr

from engine.settings import Settings
from projectors.exports import jobs
from projectors.exports.errors import LeaseLostError
from projectors.exports.runner import ExportWorker
from projectors.store import Connection, connect
from tests.keys import admin_client
from tests.projectors.exports.conftest import Event, api
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


def s3_object(settings: Settings, key: str) -> bytes:
    secret = settings.aws_secret_access_key
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
    )
    body: bytes = s3.get_object(Bucket=settings.export_bucket, Key=key)["Body"].read()
    return body


def azure_blob(settings: Settings, key: str) -> bytes:
    conn = settings.azure_storage_connection_string.get_secret_value()
    with BlobServiceClient.from_connection_string(conn) as service:
        return service.get_blob_client(settings.export_bucket, key).download_blob().readall()


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    answer = client.post("/exports", json=body)
    assert answer.status_code == 201, answer.text
    job: dict[str, Any] = answer.json()
    return job


def show(client: TestClient, job_id: str) -> dict[str, Any]:
    answer = client.get(f"/exports/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


@pytest.fixture
def jobs_db(export_settings: Settings) -> Any:
    with connect(export_settings) as conn:
        yield conn


def streamed(client: TestClient, flow_id: str, export_format: str) -> bytes:
    answer = client.get(f"/flows/{flow_id}/events/export", params={"format": export_format})
    assert answer.status_code == 200
    return answer.content


# -- lifecycle ---------------------------------------------------------------------------


def test_a_job_goes_from_created_to_complete_with_its_gzip_file_in_s3(
    client: TestClient,
    export_settings: Settings,
    jobs_db: Connection,
    flow_events: list[Event],
    pg_schema: str,
) -> None:
    answer = client.post(
        "/exports",
        json={"flow_id": pg_schema, "format": "jsonl"},
        headers={"X-Leadflow-User": "ada@seller.example"},
    )
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["status"] == "created" and job["download_url"] is None
    # Who asked is the key (the tests' configured one), not the header it names itself by.
    assert job["filters"] == {"flow_id": pg_schema} and job["requested_by"] == "config:tests"
    assert answer.headers["location"].endswith(f"/exports/{job['id']}")
    key = f"{export_settings.export_prefix}{job['id']}.jsonl.gz"
    assert job["object_key"] == key and job["store"] == "s3"

    finished = ExportWorker(export_settings).run_once(jobs_db)

    assert finished is not None and str(finished.id) == job["id"]
    done = show(client, job["id"])
    assert done["status"] == "complete", done["error"]
    assert done["rows"] == len(flow_events) and done["attempts"] == 1
    assert done["started_at"] <= done["finished_at"]
    stored = s3_object(export_settings, key)
    assert done["bytes"] == len(stored)
    assert gzip.decompress(stored) == streamed(client, pg_schema, "jsonl")
    assert done["download_url"].endswith(f"/exports/{job['id']}/download")


def test_the_same_job_in_azure_blob_storage(
    client: TestClient, export_settings: Settings, flow_events: list[Event], pg_schema: str
) -> None:
    settings = export_settings.model_copy(
        update={"export_store_kind": "azure_blob", "export_bucket": export_settings.azure_container}
    )
    client = admin_client(api(settings))
    job = create(client, flow_id=pg_schema, type=["flow.completed"])
    with connect(settings) as conn:
        ExportWorker(settings).run_once(conn)
    done = show(client, job["id"])
    assert (done["status"], done["store"], done["rows"]) == ("complete", "azure_blob", 3)
    stored = azure_blob(settings, done["object_key"])
    assert gzip.decompress(stored).splitlines()[0].startswith(b"event_id,lead_id,time,")
    assert len(gzip.decompress(stored).splitlines()) == 1 + 3
    assert client.get(done["download_url"]).content == stored


def test_downloads_stream_the_file_and_record_who_and_when(
    client: TestClient, export_settings: Settings, jobs_db: Connection, flow_events: list[Event]
) -> None:
    job = create(client, format="csv")
    ExportWorker(export_settings).run_once(jobs_db)
    url = f"/exports/{job['id']}/download"

    by_name = client.get(url, headers={"X-Leadflow-User": "grace"})
    anonymous = client.get(url)

    for answer in (by_name, anonymous):
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/gzip"
        assert answer.headers["content-disposition"] == f'attachment; filename="{job["id"]}.csv.gz"'
        assert answer.content == s3_object(export_settings, job["object_key"])
    downloads = show(client, job["id"])["downloads"]
    assert [(d["by"], d["address"]) for d in downloads] == [
        ("config:tests (grace)", "testclient"),  # the key, and the user it names
        ("config:tests", "testclient"),  # no user given: the key alone
    ]
    assert all(d["at"].endswith("Z") for d in downloads)


def test_jobs_are_listed_newest_first_and_by_status(
    client: TestClient, export_settings: Settings, jobs_db: Connection, flow_events: list[Event]
) -> None:
    first, second = create(client), create(client, format="jsonl")
    ExportWorker(export_settings).run_once(jobs_db)  # the oldest waiting job first
    assert [j["id"] for j in client.get("/exports").json()] == [second["id"], first["id"]]
    complete = client.get("/exports", params={"status": "complete"}).json()
    assert [(j["id"], j["status"]) for j in complete] == [(first["id"], "complete")]
    assert client.get("/exports", params={"status": "done"}).status_code == 422


def test_the_api_process_runs_the_worker_when_configured(
    export_settings: Settings, flow_events: list[Event], pg_schema: str
) -> None:
    settings = export_settings.model_copy(update={"export_worker_in_api": True})
    with admin_client(api(settings)) as client:
        job = create(client, flow_id=pg_schema)
        wait_until(
            lambda: show(client, job["id"])["status"],
            60,
            "the API's worker thread to finish the job",
            until=lambda status: status not in ("created", "processing"),
        )
        assert show(client, job["id"])["status"] == "complete"


# -- refused requests ----------------------------------------------------------------------


def test_downloading_an_unfinished_or_unknown_job_is_refused(
    client: TestClient, export_settings: Settings
) -> None:
    job = create(client)
    answer = client.get(f"/exports/{job['id']}/download")
    assert answer.status_code == 409
    assert "is created; its file can be downloaded once it is complete" in answer.text
    assert client.get(f"/exports/{uuid.uuid4()}").status_code == 404
    assert client.get(f"/exports/{uuid.uuid4()}/download").status_code == 404
    assert client.get("/exports/not-a-uuid").status_code == 422


def test_a_job_body_is_validated_like_the_export_query(
    client: TestClient, export_settings: Settings
) -> None:
    for body, message in [
        ({"format": "xml"}, "Input should be 'csv' or 'jsonl'"),
        ({"flow": "demo"}, "Extra inputs are not permitted"),
        ({"start": "2025-01-02", "end": "2025-01-01"}, "must be after start"),
    ]:
        answer = client.post("/exports", json=body)
        assert answer.status_code == 422 and message in answer.text


# -- workers that die, fail or stop --------------------------------------------------------


def expire_lease(conn: Connection, job_id: str) -> None:
    """What time does to the lease of a worker that stopped renewing it."""
    conn.execute(
        "UPDATE export_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (job_id,),
    )


def test_a_job_whose_worker_died_is_completed_by_another_after_the_lease_expires(
    client: TestClient, export_settings: Settings, jobs_db: Connection, flow_events: list[Event]
) -> None:
    job = create(client)
    dead = jobs.claim_job(jobs_db, "worker-that-dies", lease_s=60)
    assert dead is not None
    shown = show(client, job["id"])
    assert (shown["status"], shown["attempts"]) == ("processing", 1)
    survivor = ExportWorker(export_settings, name="survivor")
    assert survivor.run_once(jobs_db) is None  # the lease still holds

    expire_lease(jobs_db, job["id"])
    finished = survivor.run_once(jobs_db)

    assert finished is not None and finished.worker == "survivor"
    done = show(client, job["id"])
    assert (done["status"], done["attempts"], done["rows"]) == ("complete", 2, len(flow_events) + 5)
    # The first worker comes back to life: it may record nothing any more.
    with pytest.raises(LeaseLostError):
        jobs.complete_job(jobs_db, dead, rows=0, size=0)
    with pytest.raises(LeaseLostError):
        jobs.renew_lease(jobs_db, dead, 60)
    assert show(client, job["id"])["rows"] == len(flow_events) + 5


def test_a_job_whose_workers_keep_dying_is_given_up_with_the_reason(
    client: TestClient, export_settings: Settings, jobs_db: Connection
) -> None:
    job = create(client)
    for _ in range(jobs.MAX_ATTEMPTS):
        assert jobs.claim_job(jobs_db, "doomed", lease_s=60) is not None
        expire_lease(jobs_db, job["id"])
    assert jobs.claim_job(jobs_db, "next", lease_s=60) is None
    given_up = show(client, job["id"])
    assert given_up["status"] == "error"
    assert given_up["error"] == (
        "gave up after 3 attempts: the worker stopped (crashed or was killed) before finishing"
        " each time"
    )


def test_a_worker_shutting_down_hands_its_job_back_at_once(
    client: TestClient, export_settings: Settings, jobs_db: Connection, flow_events: list[Event]
) -> None:
    job = create(client)
    stopping = threading.Event()
    stopping.set()
    ExportWorker(export_settings, chunk_rows=1).run_once(jobs_db, stopping)
    released = show(client, job["id"])
    assert (released["status"], released["attempts"]) == ("processing", 0)
    finished = ExportWorker(export_settings).run_once(jobs_db)  # no lease to wait out
    assert finished is not None and finished.status == "complete"


def test_a_missing_container_ends_the_job_in_error_naming_it(
    export_settings: Settings, unique_id: str, flow_events: list[Event]
) -> None:
    settings = export_settings.model_copy(
        update={"export_store_kind": "azure_blob", "export_bucket": f"missing-{unique_id}"}
    )
    client = admin_client(api(settings))
    job = create(client)
    with connect(settings) as conn:
        ExportWorker(settings).run_once(conn)
    failed = show(client, job["id"])
    assert failed["status"] == "error" and failed["download_url"] is None
    assert failed["error"] == (
        f"destination azure_blob:missing-{unique_id}/: ContainerNotFound (HTTP 404)"
    )
    assert "AccountKey" not in failed["error"]
    answer = client.get(f"/exports/{job['id']}/download")
    assert answer.status_code == 409 and "ContainerNotFound" in answer.text


def test_refused_credentials_end_the_job_in_error_without_the_secret(
    export_settings: Settings, flow_events: list[Event]
) -> None:
    wrong_secret = base64.b64encode(os.urandom(32)).decode()
    settings = export_settings.model_copy(update={"aws_secret_access_key": SecretStr(wrong_secret)})
    client = admin_client(api(settings))
    job = create(client)
    with connect(settings) as conn:
        ExportWorker(settings).run_once(conn)
    failed = show(client, job["id"])
    assert failed["status"] == "error"
    assert "SignatureDoesNotMatch (HTTP 403)" in failed["error"]
    assert wrong_secret not in failed["error"]
