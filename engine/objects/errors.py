"""Errors of the streamers package: what went wrong at which destination, never with credentials."""

from __future__ import annotations

from engine.errors import LeadflowError


class DestinationError(LeadflowError):
    """An object store refused or failed an operation.

    ``cause`` is a short, credential-free description built by the adapter
    (error code and HTTP status); the driver's own exception is chained as
    ``__cause__`` for debugging.
    """

    def __init__(self, destination: str, cause: str) -> None:
        self.destination = destination
        self.cause = cause
        super().__init__(f"destination {destination}: {cause}")


class ObjectNotFoundError(DestinationError):
    """The key does not exist (a missing bucket or container is a plain ``DestinationError``)."""


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret replaced: the last guard before a
    driver's message becomes ours."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
