"""Erasure in object stores: an erased lead's per-event objects deleted from every destination
of its flow, and export files that hold the lead removed.

Per-event objects (``format: json``) are one lead each, so they can go. Batched objects
(``jsonl.gz``, ``avro``) hold many leads: they are left as they are and hold only the
erased lead's ciphertext (its key is gone) when the flow seals. Export files are
rewritten by nobody: one that holds the lead is deleted and its job marked ``error``
with the reason, so whoever needs it asks for it again (without the erased lead).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import sql

from engine.destinations import Destination
from engine.flows import Flow
from engine.ids import id_timestamp_ms
from engine.objects.contract import directory
from engine.objects.destination import open_store
from engine.objects.errors import ObjectNotFoundError
from engine.settings import Settings

log = structlog.get_logger(__name__)

EXPORT_REMOVED = "removed by leadflow erase: it held a lead since erased; request it again"


@dataclass
class ObjectsErased:
    """What one lead's erasure did to objects."""

    deleted: int = 0
    batched: list[str] = field(default_factory=list)  # destinations that keep ciphertext
    exports_removed: int = 0


def _lead_keys(destination: Destination, flow_id: str, lead_id: str, keys: list[str]) -> list[str]:
    if destination.effective_layout == "lead":
        return keys
    return [k for k in keys if f"/{lead_id}/" in f"/{k}"]


def _listing_prefix(destination: Destination, flow_id: str, lead_id: str) -> str:
    base = directory(destination.prefix)
    if destination.effective_layout == "lead":
        return f"{base}{lead_id}/"
    return f"{base}flow_id={flow_id}/"


def erase_objects(settings: Settings, flow: Flow, lead_id: str) -> ObjectsErased:
    """Delete the lead's per-event objects in every destination of ``flow`` (disabled ones
    too: they may hold objects from before). Idempotent."""
    out = ObjectsErased()
    for destination in flow.destinations:
        if destination.batched:
            out.batched.append(destination.name)
            continue
        store = open_store(destination, settings, threads=2)
        try:
            listed = store.list_keys(_listing_prefix(destination, flow.id, lead_id))
            for key in _lead_keys(destination, flow.id, lead_id, listed):
                store.delete(key)
                out.deleted += 1
        finally:
            store.close()
    return out


def _gunzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    for chunk in chunks:
        yield inflate.decompress(chunk)
    yield inflate.flush()


def _holds(chunks: Iterator[bytes], needle: bytes) -> bool:
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        if needle in window:
            return True
        tail = window[-len(needle) :]
    return False


def remove_exports(conn: psycopg.Connection[Any], settings: Settings, lead_id: str) -> int:
    """Delete every finished export file that holds the lead and mark its job ``error``.
    Only files finished after the lead was submitted can hold it."""
    exists = conn.execute(
        "SELECT to_regclass(%s)", (f"{settings.db_schema}.export_jobs",)
    ).fetchone()
    if exists is None or exists[0] is None:
        return 0
    table = sql.Identifier(settings.db_schema, "export_jobs")
    jobs = conn.execute(
        sql.SQL(
            "SELECT id, store_kind, bucket, object_key FROM {} WHERE status = 'complete'"
            " AND finished_at >= to_timestamp(%s / 1000.0)"
        ).format(table),
        (id_timestamp_ms(lead_id),),
    ).fetchall()
    removed = 0
    for job_id, kind, bucket, key in jobs:
        store = open_store(Destination(kind=kind, bucket=bucket), settings, threads=1)
        try:
            try:
                held = _holds(_gunzipped(store.read_chunks(key)), lead_id.encode())
            except ObjectNotFoundError:  # deleted by an erase that stopped before the update
                held = True
            if not held:
                continue
            store.delete(key)
        finally:
            store.close()
        conn.execute(
            sql.SQL("UPDATE {} SET status = 'error', error = %s WHERE id = %s").format(table),
            (EXPORT_REMOVED, job_id),
        )
        removed += 1
        log.info("export removed by erasure", job_id=str(job_id))
    return removed
