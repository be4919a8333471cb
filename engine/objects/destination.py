"""Opening the object store a flow destination names, with its credentials resolved."""

from __future__ import annotations

from engine.destinations import Destination
from engine.objects.contract import DEFAULT_THREADS, ObjectStore
from engine.settings import Settings


def open_store(
    destination: Destination, settings: Settings, *, threads: int = DEFAULT_THREADS
) -> ObjectStore:
    """A store for ``destination`` whose connection pool fits ``threads`` concurrent writers."""
    # Imported here so a process streaming only to S3 never loads the Azure SDK.
    if destination.kind == "s3":
        from engine.objects.s3 import open_s3_store

        return open_s3_store(destination, settings, max_connections=threads)
    from engine.objects.azure import open_azure_store

    return open_azure_store(destination, settings, max_connections=threads)
