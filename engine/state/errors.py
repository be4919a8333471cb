"""Errors of the engine's shared state (caps, duplicates), so a worker can tell "retry" apart."""

from __future__ import annotations

from engine.errors import LeadflowError, TransientStepError


class StateError(LeadflowError):
    """Root of the errors ``engine.state`` raises on purpose."""


class StateUnavailableError(StateError, TransientStepError):
    """Postgres could not answer a cap or duplicate question (down, restarting, timed out).

    A ``TransientStepError``: the worker aborts its Kafka transaction, rewinds and
    retries the lead later. Deciding without the state would break a cap or let a
    duplicate through, so the lead is never skipped and never decided without it.
    """


class StateMigrationError(StateError):
    """The state tables cannot be brought to the version this code expects."""
