"""The two store methods exports add to the object store contract, on SeaweedFS and Azurite:
a file uploaded in parts (replacing what was there) and an object read back in parts."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from engine.destinations import Destination
from engine.objects.contract import ObjectStore
from engine.objects.destination import open_store
from engine.objects.errors import ObjectNotFoundError
from engine.settings import Settings

pytestmark = pytest.mark.stack

# Larger than one upload part on either backend (8 MiB on S3, 4 MiB on Azure).
LARGE = 9 * 1024 * 1024 + 123


@pytest.fixture(params=["s3", "azure_blob"])
def store(request: pytest.FixtureRequest, stack: Settings, unique_id: str) -> Iterator[ObjectStore]:
    bucket = stack.s3_bucket if request.param == "s3" else stack.azure_container
    store = open_store(Destination(kind=request.param, bucket=bucket), stack)
    yield store
    for key in store.list_keys(f"{unique_id}/"):
        store.delete(key)
    store.close()


def test_a_file_larger_than_a_part_goes_up_and_comes_back_whole(
    store: ObjectStore, unique_id: str
) -> None:
    content = os.urandom(LARGE)
    store.upload_file(f"{unique_id}/big.bin", io.BytesIO(content), "application/octet-stream")
    chunks = list(store.read_chunks(f"{unique_id}/big.bin"))
    assert b"".join(chunks) == content
    assert len(chunks) > 1 and max(map(len, chunks)) <= 4 * 1024 * 1024


def test_an_upload_replaces_the_object_and_reads_from_the_files_position(
    store: ObjectStore, unique_id: str
) -> None:
    key = f"{unique_id}/export.gz"
    store.upload_file(key, io.BytesIO(b"first run"), "application/gzip")
    second = io.BytesIO(b"skip:second run")
    second.seek(5)
    store.upload_file(key, second, "application/gzip")
    assert b"".join(store.read_chunks(key)) == b"second run"


def test_reading_a_missing_object_fails_before_the_first_chunk(
    store: ObjectStore, unique_id: str
) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.read_chunks(f"{unique_id}/missing.gz")
