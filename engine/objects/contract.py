"""The object store contract every destination implements (S3, Azure Blob, and the tests'
in-memory store), and the prefix rules every user of a store shares.

Delivery semantics: ``put_if_absent`` is create-only. "Already exists" is a
success, because keys are deterministic per event (``streamers.layout``): the
object there is this event, written by an earlier attempt. Content is not
compared (that would cost a GET per retry).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, BinaryIO, Literal, Protocol

PutResult = Literal["created", "exists"]

DEFAULT_THREADS = 16


class ObjectStore(Protocol):
    """One bucket or container. Every method is safe to call from many threads at once;
    every failure is raised as ``engine.objects.errors.DestinationError``."""

    @property
    def name(self) -> str:
        """The destination's name for logs and errors (no credentials)."""
        ...

    def put_if_absent(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        """Create ``key`` holding ``body`` (with ``metadata``, names as for
        ``put_file_if_absent``), unless it exists. One request from bytes in memory: a
        per-event object pays nothing a bare PUT of the same bytes does not."""
        ...

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


def normalise_prefix(prefix: str) -> str:
    """``"/a//b/"`` -> ``"a/b"``; ``""`` and ``"/"`` -> ``""`` (objects at the bucket root)."""
    return "/".join(part for part in prefix.split("/") if part)


def directory(prefix: str) -> str:
    """The prefix as a listing prefix: ``"a/b/"``, or ``""`` for the bucket root.

    The trailing slash matters: listing ``"demo"`` would also match ``"demo2/..."``.
    """
    norm = normalise_prefix(prefix)
    return f"{norm}/" if norm else ""
