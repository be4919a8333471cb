"""The object store contract every destination implements, and opening one for a flow destination.

Delivery semantics: ``put_if_absent`` is create-only. "Already exists" is a
success, because keys are deterministic per event (``streamers.layout``): the
object there is this event, written by an earlier attempt. Content is not
compared (that would cost a GET per retry).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, BinaryIO, Literal, Protocol

from engine.destinations import Destination
from engine.settings import Settings
from streamers import layout

PutResult = Literal["created", "exists"]

DEFAULT_THREADS = 16


class ObjectStore(Protocol):
    """One bucket or container. Every method is safe to call from many threads at once;
    every failure is raised as ``streamers.errors.DestinationError``."""

    @property
    def name(self) -> str:
        """The destination's name for logs and errors (no credentials)."""
        ...

    def put_if_absent(self, key: str, body: bytes, content_type: str) -> PutResult: ...

    def put_file_if_absent(
        self, key: str, file: IO[bytes], content_type: str, metadata: Mapping[str, str]
    ) -> PutResult:
        """Create ``key`` from ``file`` (from its start) with ``metadata``, unless it exists.

        Metadata names are ``[a-z0-9_]`` (each adapter spells them as its
        store allows); batched objects record the Kafka range they hold there,
        so a retry that finds the object can tell what it covers.
        """
        ...

    def metadata(self, key: str) -> dict[str, str]:
        """The object's metadata, names as given to ``put_file_if_absent``;
        ``ObjectNotFoundError`` if there is no object."""
        ...

    def get(self, key: str) -> bytes:
        """The object's content; ``ObjectNotFoundError`` if there is none."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` (a plain string prefix), sorted."""
        ...

    def upload_file(self, key: str, file: BinaryIO, content_type: str) -> None:
        """Write ``key`` from ``file`` (from its current position), replacing any object there.

        Read and sent in parts, so a file of any size costs bounded memory
        (export files; events use ``put_if_absent``).
        """
        ...

    def read_chunks(self, key: str) -> Iterator[bytes]:
        """The object's content in parts of bounded size.

        The request is made before this returns, so a missing object raises
        ``ObjectNotFoundError`` here rather than at the first chunk, when an
        HTTP answer streaming it may already have sent its status.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    def close(self) -> None: ...


def open_store(
    destination: Destination, settings: Settings, *, threads: int = DEFAULT_THREADS
) -> ObjectStore:
    """A store for ``destination`` whose connection pool fits ``threads`` concurrent writers."""
    # Imported here so a process streaming only to S3 never loads the Azure SDK.
    if destination.kind == "s3":
        from streamers.s3 import open_s3_store

        return open_s3_store(destination, settings, max_connections=threads)
    from streamers.azure import open_azure_store

    return open_azure_store(destination, settings, max_connections=threads)


def count_objects(store: ObjectStore, prefix: str, *, include_dead_letters: bool = False) -> int:
    """How many objects a destination holds under ``prefix`` (normalised like the streamer's)."""
    keys = store.list_keys(layout.directory(prefix))
    if include_dead_letters:
        return len(keys)
    return sum(1 for key in keys if not layout.is_dead_letter_key(prefix, key))
