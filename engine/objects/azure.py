"""The Azure Blob adapter: create-only uploads, SDK errors translated into leadflow's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, Any, BinaryIO

import requests
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    LinearRetry,
    StorageStreamDownloader,
)
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from engine.destinations import AzureCredentials, Destination
from engine.errors import ConfigError
from engine.objects.contract import PutResult
from engine.objects.errors import DestinationError, ObjectNotFoundError, redact
from engine.settings import Settings

# Uploads and downloads of large files move in parts of this size (the SDK's
# defaults read up to 64 MiB into memory for one request); events are far
# smaller and still go up in one request.
_PART_BYTES = 4 * 1024 * 1024


def _error_code(exc: HttpResponseError) -> str:
    # The storage SDK sets ``error_code`` (x-ms-error-code) on the errors it
    # raises: a plain string, or a StorageErrorCode (a str enum) for some.
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "Unknown")


class AzureBlobStore:
    """One blob container, shared by all writer threads (the SDK's clients are thread-safe)."""

    def __init__(self, container: ContainerClient, name: str, secrets: tuple[str, ...]) -> None:
        self._container = container
        self._name = name
        self._secrets = secrets

    @property
    def name(self) -> str:
        return self._name

    def _error(self, exc: AzureError) -> DestinationError:
        if isinstance(exc, HttpResponseError):
            cause = f"{_error_code(exc)} (HTTP {exc.status_code})"
        else:
            cause = f"{type(exc).__name__}: {exc.message}"
        missing_blob = isinstance(exc, HttpResponseError) and _error_code(exc) == "BlobNotFound"
        kind = ObjectNotFoundError if missing_blob else DestinationError
        return kind(self._name, redact(cause, *self._secrets))

    def put_if_absent(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        extra = {"metadata": dict(metadata)} if metadata else {}
        return self._create(key, body, content_type, **extra)

    def put_file_if_absent(
        self, key: str, file: IO[bytes], content_type: str, metadata: Mapping[str, str]
    ) -> PutResult:
        file.seek(0, 2)
        length = file.tell()
        file.seek(0)
        return self._create(key, file, content_type, length=length, metadata=dict(metadata))

    def _create(
        self, key: str, data: bytes | IO[bytes], content_type: str, **extra: Any
    ) -> PutResult:
        """An upload that never overwrites - "exists" when the blob is there."""
        try:
            # overwrite=False sends If-None-Match: * (on the single put, or on the
            # block list commit of a large file); an existing blob answers 409.
            self._container.upload_blob(
                key,
                data,
                overwrite=False,
                content_settings=ContentSettings(content_type=content_type),
                **extra,
            )
        except HttpResponseError as exc:
            if exc.status_code == 409 and _error_code(exc) == "BlobAlreadyExists":
                return "exists"
            raise self._error(exc) from exc
        except AzureError as exc:
            raise self._error(exc) from exc
        return "created"

    def metadata(self, key: str) -> dict[str, str]:
        try:
            properties = self._container.get_blob_client(key).get_blob_properties()
        except AzureError as exc:
            raise self._error(exc) from exc
        return {name.lower(): value for name, value in (properties.metadata or {}).items()}

    def get(self, key: str) -> bytes:
        try:
            return self._container.download_blob(key).readall()
        except AzureError as exc:
            raise self._error(exc) from exc

    def upload_file(self, key: str, file: BinaryIO, content_type: str) -> None:
        try:
            self._container.upload_blob(
                key,
                file,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
                max_concurrency=2,
            )
        except AzureError as exc:
            raise self._error(exc) from exc

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            downloader = self._container.download_blob(key)
        except AzureError as exc:
            raise self._error(exc) from exc
        return self._downloaded_chunks(downloader)

    def _downloaded_chunks(self, downloader: StorageStreamDownloader[bytes]) -> Iterator[bytes]:
        try:
            yield from downloader.chunks()
        except AzureError as exc:
            raise self._error(exc) from exc

    def list_keys(self, prefix: str) -> list[str]:
        try:
            return sorted(self._container.list_blob_names(name_starts_with=prefix or None))
        except AzureError as exc:
            raise self._error(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self._container.delete_blob(key)
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "BlobNotFound":
                return
            raise self._error(exc) from exc
        except AzureError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._container.close()


def _transport(max_connections: int) -> RequestsTransport:
    # requests keeps 10 connections per host by default: more writer threads
    # than that would open and discard a connection per upload.
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_maxsize=max_connections,
        # The SDK's retry policy retries, not urllib3 (as azure-core's own session does).
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=True)


def open_azure_store(
    destination: Destination, settings: Settings, max_connections: int
) -> AzureBlobStore:
    """A store for an ``azure_blob`` destination; ``destination.bucket`` is the container.

    The connection string is the destination's own (resolved from its reference
    now), else the settings'.
    """
    if isinstance(destination.credentials, AzureCredentials):
        reference = destination.credentials.connection_string
        connection_string = reference.resolve().get_secret_value()
        source = f"the connection string in {reference.describe()}"
    else:
        connection_string = settings.azure_storage_connection_string.get_secret_value()
        source = "AZURE_STORAGE_CONNECTION_STRING"
    try:
        service = BlobServiceClient.from_connection_string(
            connection_string,
            transport=_transport(max_connections),
            connection_timeout=3,
            read_timeout=15,
            # The SDK's default waits 15 s before its first retry; two quick
            # retries (0-2 s apart) here, then the streamer's own backoff.
            retry_policy=LinearRetry(backoff=1, random_jitter_range=1, retry_total=2),
            max_single_put_size=_PART_BYTES,
            max_block_size=_PART_BYTES,
            max_single_get_size=_PART_BYTES,
            max_chunk_get_size=_PART_BYTES,
        )
    except ValueError:
        # The SDK's message may quote the connection string.
        raise ConfigError(f"{source} is malformed") from None
    account_key = getattr(service.credential, "account_key", None)
    secrets = tuple(s for s in (connection_string, account_key) if isinstance(s, str) and s)
    container = service.get_container_client(destination.bucket)
    return AzureBlobStore(container, destination.name, secrets)
