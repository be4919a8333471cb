"""What ``leadflow streamer status`` shows per destination: state, lag, last object, last error.

Assembled from three places, each the authority on its part: the flow
definition (is the destination configured and enabled), the lifecycle table
(its state and last activity, written by every streamer) and Kafka (the
destination's consumer group's lag).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import KafkaException

from engine.flows import Flow
from engine.runtime.kafka.clients import new_admin
from engine.settings import Settings
from streamers.destination_state import DestinationState, open_state, read_states
from streamers.metrics import StreamerMetrics
from streamers.streamer import consumer_group_id
from streamers.topic_offsets import flow_partitions, group_lag


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    flow_id: str
    destination: str
    name: str
    state: str  # active, deactivated, disabled, off (enabled: false), unverified (no state)
    reason: str | None
    lag: int | None  # None: unknown (Kafka did not answer)
    last_object_key: str | None
    last_object_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


def _state_of(enabled: bool, row: DestinationState | None) -> tuple[str, str | None]:
    if not enabled:
        return "off", "enabled: false in the flow definition"
    if row is None:
        return "unverified", "never verified: apply the flow or run `leadflow streamer verify`"
    return row.state, row.reason


def destination_status(
    settings: Settings, flows: Iterable[Flow], *, metrics: StreamerMetrics | None = None
) -> list[DestinationStatus]:
    """Every destination of ``flows``; sets the lag gauges of ``metrics`` when given."""
    flows = list(flows)
    with open_state(settings) as conn:
        rows = {(r.flow_id, r.destination): r for r in read_states(conn)}
    admin = new_admin(settings)
    out = []
    for flow in flows:
        try:
            parts: list[tuple[str, int]] | None = flow_partitions(admin, flow.id)
        except KafkaException:
            parts = None
        for destination in flow.destinations:
            row = rows.get((flow.id, destination.key))
            state, reason = _state_of(destination.enabled, row)
            lag = None
            if parts is not None:
                try:
                    lag = group_lag(settings, admin, consumer_group_id(flow.id, destination), parts)
                except KafkaException:
                    lag = None
            if metrics is not None and lag is not None:
                metrics.lag.labels(flow=flow.id, destination=destination.key).set(lag)
            out.append(
                DestinationStatus(
                    flow.id,
                    destination.key,
                    destination.name,
                    state,
                    reason,
                    lag,
                    row.last_object_key if row else None,
                    row.last_object_at if row else None,
                    row.last_error if row else None,
                    row.last_error_at if row else None,
                )
            )
    return out
