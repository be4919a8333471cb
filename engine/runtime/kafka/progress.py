"""Which records of a partition are done, for a consumer that finishes them out of order.

A step that waits on buyers keeps hundreds of calls in flight: the record at offset 8 may
still wait for its buyer while 9..40 have their answers. With Kafka transactions only a
committed offset says what is done, and it can only say "everything below N". Committing
9..40's outputs with offset 8 would re-run them after a crash (their events twice on the
topic); holding their outputs back until 8 finishes would put the slowest buyer's time on
every lead behind it.

So, as Confluent's Parallel Consumer does, the commit carries the rest in its metadata: the
committed offset is the lowest offset not done (``base``), and the offset's metadata lists
the offsets above it that are done, in the same transaction as their outputs. After a crash
or a rebalance the next owner reads both and skips what is listed: only unfinished work runs
again. Offsets a consumer never sees (transaction markers, aborted records) are gaps between
two fetched offsets and count as done.

The metadata is a bitmap of the offsets above ``base``, zlib-compressed and base64-encoded
behind a version tag; the broker keeps at most ``offset.metadata.max.bytes`` (4096 by default)
of it, so a consumer stops taking new records of a partition once ``span`` reaches
``MAX_SPAN`` (the bitmap of a span that long compresses far below that limit).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable

_TAG = "lf1:"
# Offsets between ``base`` and the highest one taken: a bound on the bitmap, so the metadata
# stays far below the broker's 4096 bytes even when done and not-done offsets alternate.
MAX_SPAN = 16_384


class MetadataError(ValueError):
    """Commit metadata that is not a progress bitmap of this kind (another tool's, or damaged)."""


def encode_done(base: int, done: Iterable[int]) -> str:
    """The offsets above ``base`` in ``done`` as commit metadata ("" when there are none)."""
    above = sorted(o - base for o in done if o > base)
    if not above:
        return ""
    bitmap = bytearray((above[-1] >> 3) + 1)
    for n in above:
        bitmap[n >> 3] |= 1 << (n & 7)
    return _TAG + base64.b64encode(zlib.compress(bytes(bitmap), 9)).decode("ascii")


def decode_done(base: int, metadata: str | None) -> set[int]:
    """The done offsets ``encode_done`` wrote; an empty set for empty or absent metadata."""
    if not metadata:
        return set()
    if not metadata.startswith(_TAG):
        raise MetadataError(f"not leadflow progress metadata: {metadata[:40]!r}")
    try:
        bitmap = zlib.decompress(base64.b64decode(metadata[len(_TAG) :], validate=True))
    except (ValueError, zlib.error) as exc:
        raise MetadataError(f"damaged progress metadata: {exc}") from exc
    return {
        base + (i << 3) + bit
        for i, byte in enumerate(bitmap)
        if byte
        for bit in range(8)
        if byte >> bit & 1
    }


class PartitionProgress:
    """One partition's progress: ``base`` (every offset below it is done) and the offsets at
    or above it that are done already. Not thread-safe: the consumer's loop owns it.

    Records must be taken in the order the consumer fetches them, from ``base`` on (after a
    seek to ``base``: ``rewind``), so that offsets skipped between two fetched records can be
    told apart as gaps."""

    __slots__ = ("base", "done", "highest", "next_fetch")

    def __init__(self, base: int, done: Iterable[int] = ()) -> None:
        self.base = base
        self.done = {o for o in done if o >= base}
        # The highest offset taken or known done, and where the next fetched record should
        # be: one further on means the offsets between were no records.
        self.highest = max(self.done, default=base - 1)
        self.next_fetch = base
        self._advance()

    @classmethod
    def from_commit(cls, offset: int, metadata: str | None) -> PartitionProgress:
        """The progress a committed offset and its metadata describe."""
        return cls(offset, decode_done(offset, metadata))

    def take(self, offset: int) -> bool:
        """A record fetched at ``offset``: True if it still has to be processed, False if it is
        done already (a replay after a crash re-fetches records the metadata lists)."""
        if offset > self.next_fetch:
            # Offsets the consumer skipped over are not records (markers, aborted ones).
            self.done.update(range(max(self.next_fetch, self.base), offset))
        self.next_fetch = max(self.next_fetch, offset + 1)
        self.highest = max(self.highest, offset)
        if offset < self.base or offset in self.done:
            self._advance()
            return False
        self._advance()
        return True

    def finish(self, offset: int) -> None:
        """The record at ``offset`` is done: its outputs go in the transaction being built."""
        if offset >= self.base:
            self.done.add(offset)
            self._advance()

    def reached(self, end: int) -> None:
        """The partition's end is ``end``: offsets from the next fetch to it are no records
        (a transaction marker after the last record), so they are done."""
        if end > self.next_fetch:
            self.done.update(range(max(self.next_fetch, self.base), end))
            self.next_fetch = end
            self.highest = max(self.highest, end - 1)
            self._advance()

    def rewind(self) -> None:
        """The consumer was sent back to ``base``: records come again from there."""
        self.next_fetch = self.base

    def _advance(self) -> None:
        while self.base in self.done:
            self.done.discard(self.base)
            self.base += 1

    @property
    def span(self) -> int:
        """How far the highest offset taken is ahead of ``base``."""
        return max(0, self.highest + 1 - self.base)

    def commit(self) -> tuple[int, str]:
        """The offset and metadata to commit: ``base``, and the done offsets above it."""
        return self.base, encode_done(self.base, self.done)

    def copy(self) -> PartitionProgress:
        """A copy to go back to if the transaction that commits this state aborts."""
        twin = PartitionProgress(self.base, self.done)
        twin.highest, twin.next_fetch = self.highest, self.next_fetch
        return twin
