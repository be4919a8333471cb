"""How long after a delivery its buyer may report on it: the recipient step's
``return_window_days`` in the applied flow, else ``LEADFLOW_FEEDBACK_RETURN_DAYS``.

The flows come from the registry topic, read once and again when a flow is unknown (at
most once a second, so feedback on unapplied flows cannot turn into a read each) or the
copy is older than a few seconds (to follow a new version). If Kafka cannot be read, the
flows read before serve, and a flow never read gets the deployment's window.
"""

from __future__ import annotations

import contextlib
import threading
import time

from confluent_kafka import KafkaException

from engine.errors import LeadflowError
from engine.flows import RecipientStep
from engine.runtime.registry import FlowRegistry
from engine.settings import Settings

_UNKNOWN_EVERY_S = 1.0
_KNOWN_EVERY_S = 5.0


class ReturnWindows:
    """One per API process (``app.state.feedback_flows``); safe across request threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._registry = FlowRegistry(settings)
        self._lock = threading.Lock()
        self._read_at = float("-inf")

    def days(self, flow_id: str, step_id: str) -> int:
        with self._lock:
            flow = self._registry.get(flow_id)
            age = time.monotonic() - self._read_at
            if age > (_UNKNOWN_EVERY_S if flow is None else _KNOWN_EVERY_S):
                # Kafka away: the flows read before serve; the deployment's window otherwise.
                with contextlib.suppress(KafkaException, LeadflowError):
                    self._registry.refresh(5.0)
                self._read_at = time.monotonic()
                flow = self._registry.get(flow_id)
        step = next((s for s in flow.steps if s.id == step_id), None) if flow else None
        if isinstance(step, RecipientStep) and step.settings.return_window_days is not None:
            return step.settings.return_window_days
        return self._settings.feedback_return_days

    def close(self) -> None:
        self._registry.close()
