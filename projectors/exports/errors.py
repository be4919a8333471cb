"""Errors of exports, so the API can answer 404, 409 or 503 without inspecting messages."""

from __future__ import annotations

from projectors.errors import ProjectorError


class ExportError(ProjectorError):
    """Root of the errors exports raise on purpose."""


class UnknownExportError(ExportError):
    """No export job has this id."""


class ExportNotReadyError(ExportError):
    """The job has no file to download (yet, or ever: it failed)."""


class LeaseLostError(ExportError):
    """Another worker took the job over (this one's lease expired): stop, record nothing."""


class UnknownScheduleError(ExportError):
    """No export schedule has this id."""


class OutputError(ExportError):
    """A scheduled export's file could not be written where its schedule says (a local
    folder refused it, or none is configured)."""
