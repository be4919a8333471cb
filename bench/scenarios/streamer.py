"""streamer: one ``leadflow run -f FLOW streamer`` process against a bare PUT loop.

Per store (SeaweedFS S3, Azurite) and per layout (``json``: an object per
event; ``jsonl.gz``: batched objects of up to 1,000 events), a flow with that
one destination is streamed by its own streamer process, as deployed. After a
warm-up (group joined, destination verified) a burst of events is produced at
once; the figure is events / (all offsets committed - burst start), and the
process's CPU over the same interval. Then a bare loop in this process
(boto3 ``put_object`` / azure-storage-blob ``upload_blob``, create-only like
the streamer's, through a thread pool of the streamer's width) writes the same
number of objects of the same mean size to the same server: the ratio of the
two is what the streamer costs over the store itself.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.inputs import accepted_events, fill
from bench.scenarios.e2e import _start, _stop
from bench.scenarios.slow_buyer import cpu_seconds
from engine.destinations import Destination
from engine.flows import Flow, parse_flow
from engine.objects.contract import DEFAULT_THREADS
from engine.runtime.kafka.clients import new_admin
from engine.runtime.step_worker import prepare_topics
from engine.settings import Settings
from engine.topics import events_topic
from streamers.streamer import consumer_group_id
from streamers.topic_offsets import flow_partitions, group_lag

FLOW = """
id: {flow_id}
name: Bench streamer
version: 1
topics: {{partitions: {partitions}, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form A
    settings:
      fields:
        - {{name: email, type: email, required: true}}
destinations:
  - kind: {kind}
    bucket: {bucket}
    prefix: bench/{flow_id}
    format: {format}
    batch: {{max_records: 1000, max_seconds: 1}}
"""

WARM_UP_EVENTS = 100
# (figure prefix, store kind, format)
CASES = (
    ("s3_per_event", "s3", "json"),
    ("s3_batched", "s3", "jsonl.gz"),
    ("azure_per_event", "azure_blob", "json"),
    ("azure_batched", "azure_blob", "jsonl.gz"),
)


def _wait_committed(settings: Settings, flow: Flow, timeout_s: float) -> float:
    """Poll until the streamer's group has committed every record; the time it was seen."""
    admin = new_admin(settings)
    group = consumer_group_id(flow.id, flow.destinations[0])
    deadline = time.monotonic() + timeout_s
    parts = flow_partitions(admin, flow.id)
    while time.monotonic() < deadline:
        if group_lag(settings, admin, group, parts) == 0:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"streamer group {group} did not commit everything in {timeout_s:.0f}s")


def _object_sizes(settings: Settings, destination: Destination) -> list[int]:
    """Sizes of the objects under the destination's prefix (the store's own listing)."""
    if destination.kind == "s3":
        import boto3

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=(
                settings.aws_secret_access_key.get_secret_value()
                if settings.aws_secret_access_key
                else None
            ),
        )
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=destination.bucket, Prefix=destination.prefix + "/"
        )
        return [int(o.get("Size", 0)) for page in pages for o in page.get("Contents", [])]
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(
        settings.azure_storage_connection_string.get_secret_value()
    )
    container = service.get_container_client(destination.bucket)
    blobs = container.list_blobs(name_starts_with=destination.prefix + "/")
    return [int(b.size) for b in blobs]


def _retrying(put: Callable[[int], Any], index: int) -> None:
    """A put retried as the streamer retries (a loaded local server times out now and
    then); a retry that finds its object written by the timed-out attempt is done."""
    for attempt in range(6):
        try:
            put(index)
            return
        except Exception as exc:
            # azure-core errors carry status_code, botocore's ClientError a response dict.
            response = getattr(exc, "response", None)
            status = getattr(exc, "status_code", None) or (
                response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if isinstance(response, dict)
                else None
            )
            if attempt and status in (409, 412):
                return
            if attempt == 5:
                raise
            time.sleep(0.2 * 2**attempt)


def bare_put_loop(
    settings: Settings, kind: str, count: int, size: int, threads: int
) -> dict[str, float]:
    """``count`` create-only PUTs of ``size`` bytes through ``threads`` threads: the SDK
    alone, no leadflow code (a client configured as plainly as the SDK allows)."""
    body = os.urandom(size)
    prefix = f"bench/bare-{uuid.uuid4().hex[:12]}"
    put: Callable[[int], Any]
    if kind == "s3":
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=(
                settings.aws_secret_access_key.get_secret_value()
                if settings.aws_secret_access_key
                else None
            ),
            config=Config(
                max_pool_connections=threads,
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
            ),
        )

        def put(i: int) -> Any:
            return client.put_object(
                Bucket=settings.s3_bucket, Key=f"{prefix}/{i}", Body=body, IfNoneMatch="*"
            )
    else:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(
            settings.azure_storage_connection_string.get_secret_value()
        )
        container = service.get_container_client(settings.azure_container)

        def put(i: int) -> Any:
            return container.upload_blob(f"{prefix}/{i}", body, overwrite=False)

    cpu_before, started = time.process_time(), time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: _retrying(put, i), range(count)))
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_before
    return {
        "objects_s": count / elapsed,
        "mb_s": count * size / elapsed / 1e6,
        "cpu_ms_per_object": cpu * 1000 / count,
    }


def _one_case(
    settings: Settings, params: dict[str, Any], name: str, kind: str, fmt: str
) -> dict[str, float]:
    flow_id = f"b{params['run_id']}st{params['round']}{name.replace('_', '')}"
    bucket = settings.s3_bucket if kind == "s3" else settings.azure_container
    text = FLOW.format(
        flow_id=flow_id, partitions=params["partitions"], kind=kind, bucket=bucket, format=fmt
    )
    flow = parse_flow(text, "bench-streamer")
    prepare_topics(settings, flow)
    workdir = Path(tempfile.mkdtemp(prefix=f"leadflow-bench-streamer-{name}-"))
    flow_path = workdir / "flow.yaml"
    flow_path.write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "LEADFLOW_INSTANCE_ID": "bench",
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_LOG_LEVEL": "WARNING",
    }
    topic = events_topic(flow_id, "source")
    events = params["streamer_events"]
    records = accepted_events(flow_id, WARM_UP_EVENTS + events)
    argv = [sys.executable, "-m", "engine", "run", "-f", str(flow_path), "streamer"]
    procs = {"streamer": _start(argv, env, workdir / "streamer.log")}
    try:
        fill(settings, topic, records[:WARM_UP_EVENTS])
        _wait_committed(settings, flow, 180)
        cpu_before, started = cpu_seconds(procs["streamer"].pid), time.monotonic()
        fill(settings, topic, records[WARM_UP_EVENTS:])
        finished = _wait_committed(settings, flow, 900)
        cpu = cpu_seconds(procs["streamer"].pid) - cpu_before
    finally:
        notes = _stop(procs, workdir)
    if notes:
        raise RuntimeError("; ".join(notes))
    elapsed = finished - started
    sizes = _object_sizes(settings, flow.destinations[0])
    total = WARM_UP_EVENTS + events
    per_event = fmt == "json"
    # Objects written during the burst: all of them, less the warm-up's share.
    objects = len(sizes) * events / total
    mean_size = max(1, sum(sizes) // max(1, len(sizes)))
    mb = sum(sizes) * events / total / 1e6
    bare = bare_put_loop(
        settings, kind, events if per_event else max(50, int(objects)), mean_size, DEFAULT_THREADS
    )
    out = {
        "events_s": events / elapsed,
        "objects_s": objects / elapsed,
        "mb_s": mb / elapsed,
        "cpu_ms_per_event": cpu * 1000 / events,
        "object_bytes": float(mean_size),
        "bare_objects_s": bare["objects_s"],
        "bare_mb_s": bare["mb_s"],
        "bare_cpu_ms_per_object": bare["cpu_ms_per_object"],
    }
    return {f"{name}.{key}": value for key, value in out.items()}


def run_round(params: dict[str, Any]) -> dict[str, float]:
    settings = Settings()
    figures: dict[str, float] = {}
    for name, kind, fmt in CASES:
        figures.update(_one_case(settings, params, name, kind, fmt))
    figures["events_s"] = figures["s3_per_event.events_s"]
    return figures
