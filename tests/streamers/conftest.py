"""Fixtures for streamer tests: the local S3 bucket and Azure container, opened as in production."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.destinations import Destination
from engine.objects.contract import ObjectStore
from engine.objects.destination import open_store
from engine.settings import Settings


@pytest.fixture
def stores(stack: Settings) -> Iterator[dict[str, ObjectStore]]:
    """Both local stores by destination kind, on the buckets the test flows stream to."""
    opened = {
        "s3": open_store(Destination(kind="s3", bucket=stack.s3_bucket), stack),
        "azure_blob": open_store(
            Destination(kind="azure_blob", bucket=stack.azure_container), stack
        ),
    }
    yield opened
    for store in opened.values():
        store.close()
