"""What a streamer tells the rest of the system while it works, and asks it before each batch.

The streaming loop (``streamers.streamer``) moves bytes; whether a destination is
still active, how it is doing and what operators see of it (status, metrics,
``event_destination.*`` events) lives behind this protocol, so neither side
needs to know how the other is built.
"""

from __future__ import annotations

from typing import Protocol

from engine.objects.errors import DestinationError


class StreamerObserver(Protocol):
    """Called from the streamer's own thread; implementations must not block for long."""

    def written(self, key: str, size: int, created: bool) -> None:
        """An object is durable (``created`` False: it was already there)."""
        ...

    def failed(self, error: DestinationError) -> None:
        """An attempt to write failed; the streamer will retry after a backoff."""
        ...

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """These next offsets are committed: everything before them is durable."""
        ...

    def active(self) -> bool:
        """False while the destination is deactivated or disabled: the streamer pauses its
        partitions (keeping its position) and asks again later."""
        ...


class NullObserver:
    """Observes nothing and keeps every destination active."""

    def written(self, key: str, size: int, created: bool) -> None:
        return None

    def failed(self, error: DestinationError) -> None:
        return None

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        return None

    def active(self) -> bool:
        return True
