"""The real ``StreamerObserver``: one destination's health, deactivation, activity and metrics.

Called from the streaming loop's thread(s), so every call is cheap:
``active()`` answers from a cache re-read from Postgres every few seconds,
the last object and error are written at most once per ``activity_every_s``,
and only a deactivation (rare) waits for Postgres and Kafka. Postgres being
down never stops streaming: the last known state is kept and the problem
logged, because pausing every destination for a state-store outage would turn
one outage into two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.errors import DestinationError
from engine.settings import Settings
from engine.state.errors import StateUnavailableError
from engine.state.postgres import Connection
from streamers.destination_state import open_state, read_state, record_activity
from streamers.health import Health, deactivation_reason
from streamers.lifecycle import Lifecycle
from streamers.metrics import DestinationMetrics, StreamerMetrics

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


class DestinationObserver:
    """Observes one (flow, destination) streamer; thread-safe."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        flow_id: str,
        destination: Destination,
        *,
        metrics: DestinationMetrics | None = None,
        refresh_s: float = 5.0,
        activity_every_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.lifecycle = lifecycle
        self.flow_id = flow_id
        self.destination = destination
        self.metrics = metrics
        self.health = Health()
        self._refresh_s = refresh_s
        self._activity_every_s = activity_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._active = True
        self._read_at: float | None = None
        self._flushed_at: float | None = None
        self._last_object: tuple[str, datetime] | None = None
        self._last_error: tuple[str, datetime] | None = None
        self._conn: Connection | None = None
        self._log = log.bind(flow=flow_id, destination=destination.key)

    # -- StreamerObserver -------------------------------------------------------------

    def written(self, key: str, size: int, created: bool) -> None:
        with self._lock:
            self.health = self.health.succeeded()
            self._last_object = (key, datetime.now(UTC))
            if self.metrics is not None:
                self.metrics.written(size, created)
            self._flush_if_due()

    def failed(self, error: DestinationError) -> None:
        with self._lock:
            now = self._clock()
            self.health = self.health.failed(now, error.cause)
            self._last_error = (error.cause, datetime.now(UTC))
            if self.metrics is not None:
                self.metrics.retries.inc()
            reason = deactivation_reason(self.health, self.destination.deactivation, now)
            if reason is not None and self._active:
                self._deactivate(reason)
            self._flush_if_due()

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        with self._lock:
            self._flush_if_due()

    def active(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._refresh_s:
                self._refresh(now)
            return self._active

    # -- the rest -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write the pending last object and error now (the streamer is stopping)."""
        with self._lock:
            self._flush()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _deactivate(self, reason: str) -> None:
        try:
            outcome = self.lifecycle.deactivate(self.flow_id, self.destination, reason)
        except StateUnavailableError as exc:
            # Keep streaming (retrying) rather than stop on a state we could not record;
            # the next failure tries again.
            self._log.warning("could not record the deactivation", error=str(exc))
            return
        self._active = outcome.state == "active"
        self._read_at = self._clock()
        self._set_active_gauge()
        self._log.warning("destination deactivated", reason=reason, state=outcome.state)

    def _refresh(self, now: float) -> None:
        try:
            state = read_state(self._connection(), self.flow_id, self.destination.key)
        except Exception as exc:
            self._drop_connection()
            self._log.warning("destination state unreadable, keeping the last", error=str(exc))
            self._read_at = now  # not again before refresh_s: never spin on a down database
            return
        was_active = self._active
        # No row: an unmanaged destination (not verified through the lifecycle) streams.
        self._active = state is None or state.state == "active"
        if self._active and not was_active:
            self.health = Health()  # re-enabled: old failures must not count again
        self._read_at = now
        self._set_active_gauge()

    def _flush_if_due(self) -> None:
        now = self._clock()
        if self._flushed_at is None or now - self._flushed_at >= self._activity_every_s:
            self._flush()

    def _flush(self) -> None:
        if self._last_object is None and self._last_error is None:
            return
        self._flushed_at = self._clock()
        try:
            record_activity(
                self._connection(), self.flow_id, self.destination.key,
                last_object=self._last_object, last_error=self._last_error,
            )  # fmt: skip
        except Exception as exc:
            self._drop_connection()
            self._log.warning("could not record the last activity", error=str(exc))
            return
        self._last_object = self._last_error = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = open_state(self.lifecycle.settings)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _set_active_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.active.set(1 if self._active else 0)


def observe_destination(
    settings: Settings,
    flow: Flow,
    destination: Destination,
    *,
    lifecycle: Lifecycle | None = None,
    metrics: StreamerMetrics | None = None,
) -> DestinationObserver:
    """The observer a streamer of ``destination`` should be given.

    A destination with no recorded state (its flow was run from a file, never
    applied) is verified first, so nothing is streamed to an unverified destination.
    """
    lifecycle = lifecycle or Lifecycle(settings)
    lifecycle.ensure_known(flow, destination)
    bound = metrics.for_destination(flow.id, destination.key) if metrics is not None else None
    return DestinationObserver(lifecycle, flow.id, destination, metrics=bound)


def observers_for(
    settings: Settings, flow: Flow, *, metrics: StreamerMetrics | None = None
) -> dict[str, DestinationObserver]:
    """An observer per enabled destination of ``flow``, keyed as ``run_streamers`` takes them
    (``observers=``); close each when the streamers have stopped."""
    lifecycle = Lifecycle(settings)
    return {
        d.key: observe_destination(settings, flow, d, lifecycle=lifecycle, metrics=metrics)
        for d in flow.destinations
        if d.enabled
    }
