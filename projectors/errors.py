"""Errors of the projection, so callers can tell "retry later" from "fix something"."""

from __future__ import annotations

from engine.errors import LeadflowError, StackUnavailableError


class ProjectorError(LeadflowError):
    """Root of the errors the projection raises on purpose."""


class StoreUnavailableError(ProjectorError, StackUnavailableError):
    """Postgres cannot be reached or dropped the connection: transient, retry with backoff."""


class MigrationError(ProjectorError):
    """The database schema cannot be brought to the version this code expects."""
