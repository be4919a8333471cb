"""Health checks and one-time setup for the leadflow local stack.

Run with the tools venv: .stack/tools/venv/bin/python stack/lib/probe.py CMD ...
Exit status 0 = healthy/done. Used by stack/up.sh, status.sh and smoke.sh; it
also works against the compose.yaml services (same ports and credentials).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

# A private instance (stack/lib/s3.sh, azurite.sh with STACK_S3_PORT / STACK_AZ_PORT) is
# named by these; unset, the stack's default ports.
S3_ENDPOINT = os.environ.get("STACK_S3_ENDPOINT", "http://127.0.0.1:8333")
S3_ACCESS_KEY = "leadflow"
S3_SECRET_KEY = "leadflow-local-secret"  # noqa: S105 - the local emulator's, not a secret
S3_REGION = "us-east-1"
# Azurite's well-known development account (public, in Microsoft's docs): not a secret.
AZURITE_DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_DEV_KEY};BlobEndpoint={os.environ['STACK_AZ_BLOB_ENDPOINT']};"
    if os.environ.get("STACK_AZ_BLOB_ENDPOINT")
    else "UseDevelopmentStorage=true"
)
BUCKET = "leadflow-events"
CONTAINER = "leadflow-events"
CHECK_KEY = "_stack/conditional-write-check"


def kafka_ready(args: argparse.Namespace) -> int:
    """The broker answers a metadata request listing the wanted broker ids."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {"bootstrap.servers": args.bootstrap, "socket.timeout.ms": 3000, "logger": _quiet_logger()}
    )
    try:
        md = admin.list_topics(timeout=args.timeout)
    except Exception as exc:  # KafkaException on timeout
        print(f"kafka metadata failed: {exc}", file=sys.stderr)
        return 1
    want = {int(x) for x in args.broker_ids.split(",") if x}
    have = set(md.brokers)
    if not want <= have:
        print(f"brokers {sorted(have)}, waiting for {sorted(want)}", file=sys.stderr)
        return 1
    if args.verbose:
        print(f"cluster_id={md.cluster_id} controller={md.controller_id} brokers={sorted(have)}")
    return 0


def _quiet_logger():
    """Swallow librdkafka's connection-refused chatter while polling a starting broker."""
    import logging

    log = logging.getLogger("stack.probe.rdkafka")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def _s3():
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2},
            connect_timeout=3,
            read_timeout=10,
        ),
    )


def s3_setup(args: argparse.Namespace) -> int:
    """Create the bucket if missing; optionally show conditional-write behaviour."""
    from botocore.exceptions import ClientError

    s3 = _s3()
    try:
        s3.head_bucket(Bucket=BUCKET)
        created = False
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
        try:
            s3.create_bucket(Bucket=BUCKET)
        except ClientError as exc2:  # raced with someone else: fine
            code = exc2.response["Error"]["Code"]
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        created = True
    print(f"s3: bucket {BUCKET} {'created' if created else 'exists'}")
    if args.check_conditional:
        key = f"{CHECK_KEY}-{uuid.uuid4().hex}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"first", IfNoneMatch="*")
        try:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"second", IfNoneMatch="*")
            status, code = 200, "no error"
        except ClientError as exc:
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            code = exc.response["Error"]["Code"]
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        s3.delete_object(Bucket=BUCKET, Key=key)
        good = status == 412 and body == b"first"
        print(
            f"s3: PutObject IfNoneMatch='*' on an existing key -> HTTP {status} {code}; "
            f"object kept first body: {body == b'first'} [{'OK' if good else 'UNEXPECTED'}]"
        )
        if not good:
            return 3
    return 0


def azure_setup(args: argparse.Namespace) -> int:
    """Create the container if missing; optionally show overwrite=False behaviour."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(AZURE_CONNECTION_STRING)
    cont = svc.get_container_client(CONTAINER)
    try:
        cont.create_container()
        print(f"azure: container {CONTAINER} created ({svc.url})")
    except ResourceExistsError:
        print(f"azure: container {CONTAINER} exists ({svc.url})")
    if args.check_conditional:
        name = f"{CHECK_KEY}-{uuid.uuid4().hex}"
        blob = cont.get_blob_client(name)
        blob.upload_blob(b"first", overwrite=False)
        try:
            blob.upload_blob(b"second", overwrite=False)
            status, code = 201, "no error"
        except ResourceExistsError as exc:
            status, code = exc.status_code, exc.error_code
        body = blob.download_blob().readall()
        blob.delete_blob()
        good = status == 409 and code == "BlobAlreadyExists" and body == b"first"
        print(
            f"azure: upload_blob(overwrite=False) on an existing blob -> HTTP {status} {code}; "
            f"blob kept first body: {body == b'first'} [{'OK' if good else 'UNEXPECTED'}]"
        )
        if not good:
            return 3
    return 0


def azure_ready(args: argparse.Namespace) -> int:
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(AZURE_CONNECTION_STRING)
    svc.get_service_properties(timeout=5)
    return 0


def kafka_smoke(args: argparse.Namespace) -> int:
    """Create a topic, produce one message, consume it back."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    # Quiet logger: hides librdkafka's transient "Coordinator load in progress: retrying".
    conf = {"bootstrap.servers": args.bootstrap, "logger": _quiet_logger()}
    topic = f"stack-smoke-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    new = NewTopic(topic, num_partitions=1, replication_factor=args.rf)
    admin.create_topics([new])[topic].result(30)
    value = f"hello {uuid.uuid4()}".encode()
    p = Producer({**conf, "acks": "all", "enable.idempotence": True})
    p.produce(topic, value=value, key=b"k")
    assert p.flush(30) == 0, "produce not acknowledged"
    c = Consumer(
        {
            **conf,
            "group.id": f"{topic}-g",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    t0, got = time.time(), None
    while time.time() - t0 < 60 and got is None:
        m = c.poll(1.0)
        if m is not None and not m.error():
            got = m.value()
    c.close()
    admin.delete_topics([topic])[topic].result(30)
    print(
        f"kafka: produced and consumed 1 message on {topic} via {args.bootstrap}: "
        f"{'OK' if got == value else 'FAILED'} ({time.time() - t0:.1f}s to consume)"
    )
    return 0 if got == value else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kafka-ready")
    k.add_argument("--bootstrap", default="127.0.0.1:9092")
    k.add_argument("--broker-ids", default="1", help="comma-separated ids that must be live")
    k.add_argument("--timeout", type=float, default=3.0)
    k.add_argument("-v", "--verbose", action="store_true")
    k.set_defaults(fn=kafka_ready)
    ks = sub.add_parser("kafka-smoke")
    ks.add_argument("--bootstrap", default="127.0.0.1:9092")
    ks.add_argument("--rf", type=int, default=1)
    ks.set_defaults(fn=kafka_smoke)
    s = sub.add_parser("s3-setup")
    s.add_argument("--check-conditional", action="store_true")
    s.set_defaults(fn=s3_setup)
    a = sub.add_parser("azure-setup")
    a.add_argument("--check-conditional", action="store_true")
    a.set_defaults(fn=azure_setup)
    ar = sub.add_parser("azure-ready")
    ar.set_defaults(fn=azure_ready)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
