"""The S3 adapter: create-only PUTs (``If-None-Match: *``), boto3 errors translated to ours."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from engine.destinations import Destination, S3Credentials
from engine.errors import ConfigError
from engine.objects.contract import PutResult
from engine.objects.errors import DestinationError, ObjectNotFoundError, redact
from engine.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef

# A 409 ConditionalRequestConflict means another conditional write of the same
# key was in flight; retrying resolves to 200 or 412 within a few attempts.
_CONFLICT_ATTEMPTS = 5
_CONFLICT_PAUSE_S = 0.05
# GetObject answers NoSuchKey; HEAD-style calls a bare 404. NoSuchBucket is a
# configuration problem, not a missing object.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Large files go up in multipart parts, a few at a time: memory stays at
# parts x concurrency whatever the file's size.
_PART_BYTES = 8 * 1024 * 1024
_TRANSFER = TransferConfig(
    multipart_threshold=_PART_BYTES, multipart_chunksize=_PART_BYTES, max_concurrency=4
)
_READ_CHUNK_BYTES = 1024 * 1024


def _code_and_status(exc: ClientError) -> tuple[str, int | None]:
    code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


def _headers(metadata: Mapping[str, str]) -> dict[str, str]:
    # S3 user metadata travels as x-amz-meta-* headers: dashes, not underscores
    # (proxies may drop header names with underscores).
    return {name.replace("_", "-"): value for name, value in metadata.items()}


class S3Store:
    """One S3 bucket (or an S3-compatible server's), shared by all writer threads;
    boto3 clients are thread-safe."""

    def __init__(self, client: S3Client, bucket: str, name: str, secret: str | None) -> None:
        self._client = client
        self._bucket = bucket
        self._name = name
        self._secret = secret

    @property
    def name(self) -> str:
        return self._name

    def _error(self, exc: Exception) -> DestinationError:
        if isinstance(exc, ClientError):
            code, status = _code_and_status(exc)
            cause = f"{code} (HTTP {status}) on {exc.operation_name}"
            kind = ObjectNotFoundError if code in _NOT_FOUND_CODES else DestinationError
            return kind(self._name, redact(cause, self._secret))
        return DestinationError(self._name, redact(f"{type(exc).__name__}: {exc}", self._secret))

    def put_if_absent(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        # Bytes, never a file object: botocore sends every file-like body with
        # "Expect: 100-continue" and waits for the server's go-ahead before the body,
        # a round trip per object that a per-event stream would pay on every event.
        return self._create(key, content_type, lambda: body, _headers(metadata or {}))

    def put_file_if_absent(
        self, key: str, file: IO[bytes], content_type: str, metadata: Mapping[str, str]
    ) -> PutResult:
        def rewound() -> IO[bytes]:
            file.seek(0)  # each attempt sends the whole file
            return file

        return self._create(key, content_type, rewound, _headers(metadata))

    def _create(
        self,
        key: str,
        content_type: str,
        body: Callable[[], bytes | IO[bytes]],
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        """PutObject with If-None-Match: * - "exists" when the key is taken."""
        extra: dict[str, Any] = {"Metadata": dict(metadata)} if metadata else {}
        for _ in range(_CONFLICT_ATTEMPTS):
            try:
                self._client.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=body(),
                    ContentType=content_type,
                    IfNoneMatch="*",
                    **extra,
                )
            except ClientError as exc:
                code, status = _code_and_status(exc)
                if status == 412 or code == "PreconditionFailed":
                    return "exists"
                if status == 409 and code == "ConditionalRequestConflict":
                    time.sleep(_CONFLICT_PAUSE_S)
                    continue
                raise self._error(exc) from exc
            except BotoCoreError as exc:
                raise self._error(exc) from exc
            return "created"
        raise DestinationError(self._name, f"ConditionalRequestConflict persisted on {key}")

    def metadata(self, key: str) -> dict[str, str]:
        try:
            answer = self._client.head_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        return {name.lower().replace("-", "_"): v for name, v in answer["Metadata"].items()}

    def get(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    def upload_file(self, key: str, file: BinaryIO, content_type: str) -> None:
        try:
            self._client.upload_fileobj(
                file, self._bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
            )
        # A multipart upload reports a refused part as S3UploadFailedError.
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._error(exc) from exc

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        return self._body_chunks(answer)

    def _body_chunks(self, answer: GetObjectOutputTypeDef) -> Iterator[bytes]:
        body = answer["Body"]
        try:
            yield from body.iter_chunks(_READ_CHUNK_BYTES)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        finally:
            body.close()

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    def set_expiration(self, rule_id: str, prefix: str, days: int) -> None:
        """A lifecycle rule expiring objects under ``prefix`` ``days`` after they were
        written, put beside the bucket's other rules (a PUT replaces the whole set, so
        the others are read first and kept). ``DestinationError`` where the server
        refuses lifecycle rules."""
        try:
            try:
                rules = self._client.get_bucket_lifecycle_configuration(Bucket=self._bucket)[
                    "Rules"
                ]
            except ClientError as exc:
                if _code_and_status(exc)[0] != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
            kept = [r for r in rules if r.get("ID") != rule_id]
            rule: Any = {
                "ID": rule_id,
                "Filter": {"Prefix": prefix},
                "Status": "Enabled",
                "Expiration": {"Days": days},
            }
            self._client.put_bucket_lifecycle_configuration(
                Bucket=self._bucket, LifecycleConfiguration={"Rules": [*kept, rule]}
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._client.close()


def open_s3_store(destination: Destination, settings: Settings, max_connections: int) -> S3Store:
    """A store for an ``s3`` destination: its own credentials (resolved from their
    references now), else the settings' keys, else boto3's own credential chain
    (environment, profile, instance role)."""
    secret_str: SecretStr | None
    if isinstance(destination.credentials, S3Credentials):
        key_id: str | None = destination.credentials.access_key_id.resolve().get_secret_value()
        secret_str = destination.credentials.secret_access_key.resolve()
    else:
        key_id, secret_str = settings.aws_access_key_id, settings.aws_secret_access_key
    secret = secret_str.get_secret_value() if secret_str is not None else None
    if (key_id is None) != (secret is None):
        raise ConfigError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=3,
        read_timeout=15,
        # botocore retries 5xx/throttling a few times inside one attempt; the
        # streamer's own backoff takes over after that, without limit.
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=max_connections,
        # Checksums only where S3 requires them: S3-compatible servers differ
        # in their support for the newer default trailing checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
    )
    kwargs: dict[str, Any] = {"config": config, "endpoint_url": settings.s3_endpoint_url}
    if key_id is not None:
        kwargs.update(aws_access_key_id=key_id, aws_secret_access_key=secret)
    # A session per store: boto3's default session is not safe to share while
    # clients are being created from several threads.
    client = boto3.session.Session().client("s3", **kwargs)
    return S3Store(client, destination.bucket, destination.name, secret)
