"""Carrying out what alerts owe, beside the evaluator and never in its way.

A thread of the evaluator's process with its own Postgres connection claims due actions
(``engine.state.alerts.AlertActionQueue``), one at a time, under a lease: a webhook
that hangs or fails holds up only the actions behind it, never the evaluation, which only
ever inserts rows. A failed attempt is retried with exponential backoff until the
webhook's ``max_attempts``, then recorded as failed with its last error (no secret in it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from engine.alerts.rules import WebhookSettings
from engine.errors import LeadflowError
from engine.runtime.alerting.source_caps import lower_source_cap
from engine.runtime.alerting.webhook import send_webhook
from engine.runtime.backoff import backoff_delay
from engine.settings import Settings
from engine.state.alerts import AlertActionQueue, ClaimedAction
from engine.state.errors import StateUnavailableError

log = structlog.get_logger(__name__)

LEASE_S = 120.0
IDLE_S = 0.5
# A cap that cannot be lowered (Kafka away) is retried this often before it is given up.
CAP_ATTEMPTS = 20
RETRY_BASE_S = 1.0
RETRY_CAP_S = 300.0


def carry_out(settings: Settings, action: ClaimedAction) -> None:
    """One attempt at ``action``; raises what made it fail."""
    if action.kind == "webhook":
        webhook = WebhookSettings.model_validate(action.payload["webhook"])
        send_webhook(webhook, action.payload["body"], idempotency_key=action.id)
    elif action.kind == "lower_source_cap":
        lower_source_cap(settings, action.payload)
    else:
        raise LeadflowError(f"unknown alert action {action.kind}")


def _max_attempts(action: ClaimedAction) -> int:
    if action.kind == "webhook":
        return int(action.payload["webhook"].get("max_attempts", 8))
    return CAP_ATTEMPTS


class ActionRunner:
    def __init__(
        self,
        settings: Settings,
        flow_id: str,
        perform: Callable[[Settings, ClaimedAction], None] = carry_out,
    ) -> None:
        self.settings = settings
        self.flow_id = flow_id
        self._perform = perform
        self._queue = AlertActionQueue(settings, flow_id)
        self._log = log.bind(flow_id=flow_id)

    def run(self, stop: threading.Event) -> None:
        """Carry out due actions until ``stop``; Postgres away is waited out."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    did = self.run_due()
                    failures = 0
                except StateUnavailableError as exc:
                    failures += 1
                    self._log.warning("alert actions wait for postgres", error=str(exc))
                    stop.wait(backoff_delay(failures))
                    continue
                if not did:
                    stop.wait(IDLE_S)
        finally:
            self.close()

    def close(self) -> None:
        self._queue.close()

    def run_due(self) -> int:
        """Carry out every action due now; how many were tried."""
        tried = 0
        while claimed := self._queue.claim(LEASE_S, limit=1):
            for action in claimed:
                tried += 1
                self._attempt(action)
        return tried

    def _attempt(self, action: ClaimedAction) -> None:
        fields: dict[str, Any] = {"action": action.id, "kind": action.kind}
        try:
            self._perform(self.settings, action)
        except Exception as exc:  # any failure is the action's own: the runner goes on
            error = str(exc) if isinstance(exc, LeadflowError) else type(exc).__name__
            if action.attempts >= _max_attempts(action):
                self._queue.failed(action.id, error, None)
                self._log.error(
                    "alert action given up", attempts=action.attempts, error=error, **fields
                )
                return
            delay = backoff_delay(action.attempts, RETRY_BASE_S, RETRY_CAP_S)
            self._queue.failed(action.id, error, delay)
            self._log.warning(
                "alert action failed, retried",
                attempts=action.attempts,
                error=error,
                retry_in_s=round(delay, 1),
                **fields,
            )
            return
        self._queue.done(action.id)
        self._log.info("alert action done", attempts=action.attempts, **fields)
