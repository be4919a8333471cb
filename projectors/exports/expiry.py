"""Expiry of export files: a finished job's file (and the job) once older than retention.

An export may hold any flow's events, so its files keep the longest retention of the
flows; what it holds was read from the projection, whose rows of that age are gone too.
The file is deleted first, then the job (and its downloads): a run that stops between
the two finds the job again and the delete of a missing file is no error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from engine.destinations import Destination
from engine.objects.destination import open_store
from engine.objects.errors import ObjectNotFoundError
from engine.retention import Holding
from engine.settings import Settings
from projectors.store import Connection, translate_errors

log = structlog.get_logger(__name__)

_HELD = "SELECT count(*), min(created_at) FROM export_jobs"
_EXPIRED = """
SELECT id, store_kind, bucket, object_key FROM export_jobs
WHERE status IN ('complete', 'error') AND created_at < %s
ORDER BY created_at
"""


def expire_exports(
    conn: Connection, settings: Settings, edge: datetime, *, dry_run: bool
) -> list[Holding]:
    """Export jobs created before ``edge`` and finished: their files and rows removed
    unless ``dry_run``. Nothing when the export tables do not exist (no export ever ran)."""
    with translate_errors():
        exists = conn.execute("SELECT to_regclass('export_jobs') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        held = conn.execute(_HELD).fetchone()
        expired: list[Any] = conn.execute(_EXPIRED, (edge,)).fetchall()
    removed = 0
    if not dry_run:
        for job_id, kind, bucket, key in expired:
            store = open_store(Destination(kind=kind, bucket=bucket), settings, threads=1)
            try:
                store.delete(key)
            except ObjectNotFoundError:
                pass  # removed by an earlier run that stopped before the row went
            finally:
                store.close()
            with translate_errors():
                conn.execute("DELETE FROM export_jobs WHERE id = %s", (job_id,))
            removed += 1
        if removed:
            log.info("export files expired", files=removed)
    return [
        Holding(
            "exports",
            "export files",
            int(held[0]) if held else 0,
            "files",
            held[1] if held else None,
            len(expired),
            "delete file, then job",
            removed,
        )
    ]
