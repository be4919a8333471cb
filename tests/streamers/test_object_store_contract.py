"""One contract for every object store, run against real SeaweedFS (S3) and real Azurite.

Subclass ``ObjectStoreContract`` and implement ``make_store`` to admit a new backend.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from engine.destinations import Destination
from engine.objects.contract import ObjectStore
from engine.objects.destination import open_store
from engine.objects.errors import DestinationError, ObjectNotFoundError
from engine.settings import Settings
from streamers.readback import count_objects

pytestmark = pytest.mark.stack

# Azurite's published development account key (what UseDevelopmentStorage=true expands to).
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
UNREACHABLE = "http://127.0.0.1:9"


class ObjectStoreContract(ABC):
    """What the streamer relies on from a store: create-only writes, reads, listing, errors."""

    @abstractmethod
    def make_store(self, settings: Settings, bucket: str, prefix: str) -> ObjectStore:
        """A store on ``bucket`` for a destination with ``prefix``."""

    @abstractmethod
    def default_bucket(self, settings: Settings) -> str: ...

    @abstractmethod
    def unreachable(self, settings: Settings) -> Settings:
        """Settings pointing this backend at an address where nothing listens."""

    @abstractmethod
    def with_secret(self, settings: Settings, secret: str) -> Settings:
        """Settings with this backend's secret credential replaced by ``secret``."""

    @abstractmethod
    def secrets(self, settings: Settings) -> list[str]:
        """Credential values that must never appear in an error."""

    @pytest.fixture
    def store(self, stack: Settings, unique_id: str) -> Iterator[ObjectStore]:
        store = self.make_store(stack, self.default_bucket(stack), unique_id)
        yield store
        for key in store.list_keys(f"{unique_id}/"):
            store.delete(key)
        store.close()

    def assert_no_secret(self, settings: Settings, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        for secret in self.secrets(settings):
            assert secret not in text

    def test_put_creates_once_then_reports_exists_and_keeps_the_first_content(
        self, store: ObjectStore, unique_id: str
    ) -> None:
        key = f"{unique_id}/lead/event.json"
        assert store.put_if_absent(key, b'{"n": 1}', "application/json") == "created"
        assert store.put_if_absent(key, b'{"n": 2}', "application/json") == "exists"
        assert store.get(key) == b'{"n": 1}'

    def test_concurrent_puts_of_one_key_create_it_exactly_once(
        self, store: ObjectStore, unique_id: str
    ) -> None:
        key = f"{unique_id}/race.json"
        results: list[str] = []
        start = threading.Barrier(8)

        def put(n: int) -> None:
            start.wait()
            results.append(store.put_if_absent(key, f"{n}".encode(), "text/plain"))

        threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["created"] + ["exists"] * 7
        assert store.get(key) in {f"{n}".encode() for n in range(8)}

    def test_bytes_are_created_once_with_their_metadata(
        self, store: ObjectStore, unique_id: str
    ) -> None:
        key = f"{unique_id}/lead/with-position.json"
        position = {"leadflow_topic": "t", "leadflow_partition": "2", "leadflow_offset": "9"}
        assert store.put_if_absent(key, b"{}", "application/json", position) == "created"
        assert store.put_if_absent(key, b"[]", "application/json", {}) == "exists"
        assert store.get(key) == b"{}"
        assert store.metadata(key) == position

    def test_a_file_is_created_once_with_its_metadata_then_reports_exists(
        self, store: ObjectStore, unique_id: str
    ) -> None:
        key = f"{unique_id}/t+0+0000000000000000000.jsonl.gz"
        first = {"leadflow_first_offset": "0", "leadflow_last_offset": "41"}
        with io.BytesIO(b"first") as file:
            file.seek(3)  # written from its start whatever its position
            assert store.put_file_if_absent(key, file, "application/gzip", first) == "created"
        with io.BytesIO(b"second") as file:
            assert store.put_file_if_absent(key, file, "application/gzip", {}) == "exists"
        assert store.get(key) == b"first"
        assert store.metadata(key) == first
        with pytest.raises(ObjectNotFoundError):
            store.metadata(f"{unique_id}/none")

    def test_list_keys_returns_only_keys_under_the_prefix_sorted(
        self, store: ObjectStore, unique_id: str
    ) -> None:
        for key in ["b/2.json", "a/1.json", "a/0.json"]:
            store.put_if_absent(f"{unique_id}/{key}", b"{}", "application/json")
        store.put_if_absent(f"{unique_id}x/a/9.json", b"{}", "application/json")
        try:
            assert store.list_keys(f"{unique_id}/a/") == [
                f"{unique_id}/a/0.json",
                f"{unique_id}/a/1.json",
            ]
            assert count_objects(store, unique_id) == 3
            assert store.list_keys(f"{unique_id}/none/") == []
        finally:
            store.delete(f"{unique_id}x/a/9.json")

    def test_delete_removes_and_missing_objects_are_not_found(
        self, store: ObjectStore, unique_id: str
    ) -> None:
        key = f"{unique_id}/gone.json"
        store.put_if_absent(key, b"{}", "application/json")
        store.delete(key)
        store.delete(key)  # deleting twice is fine
        assert store.list_keys(f"{unique_id}/") == []
        with pytest.raises(ObjectNotFoundError):
            store.get(key)

    def test_a_missing_bucket_is_a_destination_error_naming_it_without_secrets(
        self, stack: Settings, unique_id: str
    ) -> None:
        # Reads only: SeaweedFS creates a missing bucket on the first PUT (AWS
        # and Azure refuse it); a refused PUT is covered by the tests below.
        store = self.make_store(stack, f"missing-{unique_id}", "p")
        with pytest.raises(DestinationError) as listed:
            store.list_keys("p/")
        with pytest.raises(DestinationError) as read:
            store.get("p/x.json")
        for caught in (listed, read):
            assert not isinstance(caught.value, ObjectNotFoundError)
            assert f"missing-{unique_id}" in str(caught.value)
            assert caught.value.destination == store.name
            self.assert_no_secret(stack, caught.value)
        store.close()

    def test_wrong_credentials_are_a_destination_error_without_the_secret(
        self, stack: Settings, unique_id: str
    ) -> None:
        wrong_secret = base64.b64encode(os.urandom(64)).decode()
        settings = self.with_secret(stack, wrong_secret)
        store = self.make_store(settings, self.default_bucket(stack), unique_id)
        with pytest.raises(DestinationError) as caught:
            store.put_if_absent(f"{unique_id}/x.json", b"{}", "application/json")
        assert store.name in str(caught.value)
        assert wrong_secret not in "".join(traceback.format_exception(caught.value))
        self.assert_no_secret(settings, caught.value)
        store.close()

    def test_an_unreachable_store_is_a_destination_error_without_secrets(
        self, stack: Settings, unique_id: str
    ) -> None:
        settings = self.unreachable(stack)
        store = self.make_store(settings, self.default_bucket(stack), unique_id)
        with pytest.raises(DestinationError) as caught:
            store.put_if_absent(f"{unique_id}/x.json", b"{}", "application/json")
        assert caught.value.destination == store.name
        self.assert_no_secret(settings, caught.value)
        store.close()


def azurite(settings: Settings, account_key: str, endpoint: str) -> Settings:
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={account_key};BlobEndpoint={endpoint};"
    )
    return settings.model_copy(update={"azure_storage_connection_string": SecretStr(connection)})


class TestS3Store(ObjectStoreContract):
    def make_store(self, settings: Settings, bucket: str, prefix: str) -> ObjectStore:
        return open_store(Destination(kind="s3", bucket=bucket, prefix=prefix), settings)

    def default_bucket(self, settings: Settings) -> str:
        return settings.s3_bucket

    def unreachable(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"s3_endpoint_url": UNREACHABLE})

    def with_secret(self, settings: Settings, secret: str) -> Settings:
        return settings.model_copy(update={"aws_secret_access_key": SecretStr(secret)})

    def secrets(self, settings: Settings) -> list[str]:
        assert settings.aws_secret_access_key is not None
        return [settings.aws_secret_access_key.get_secret_value()]


class TestAzureBlobStore(ObjectStoreContract):
    def make_store(self, settings: Settings, bucket: str, prefix: str) -> ObjectStore:
        return open_store(Destination(kind="azure_blob", bucket=bucket, prefix=prefix), settings)

    def default_bucket(self, settings: Settings) -> str:
        return settings.azure_container

    def unreachable(self, settings: Settings) -> Settings:
        return azurite(settings, AZURITE_ACCOUNT_KEY, f"{UNREACHABLE}/devstoreaccount1")

    def with_secret(self, settings: Settings, secret: str) -> Settings:
        return azurite(settings, secret, "http://127.0.0.1:10000/devstoreaccount1")

    def secrets(self, settings: Settings) -> list[str]:
        return [AZURITE_ACCOUNT_KEY, settings.azure_storage_connection_string.get_secret_value()]
