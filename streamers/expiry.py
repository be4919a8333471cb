"""Expiry of the streamed objects: a lifecycle rule where the store has one, and a job
that deletes expired objects by key where it does not.

Keys say when their events happened (``streamers.layout``): the ``time`` layout and the
batched objects by their ``dt=YYYY-MM-DD`` segment (the event's own UTC day), the
``lead`` layout by the event id's first 48 bits (the lead's submission, or the
feedback's publication). An object goes once its day (or its id's time, a day of grace
later for a lead's slower steps) is older than the flow's retention. Dead letters and
verification probes are not events and are left alone.

S3 (and SeaweedFS, the local server) takes a lifecycle rule per destination prefix:
objects expire that many whole days after they were written. Azure's lifecycle
management is a policy on the storage account, set through Azure Resource Manager, not
the blob API; Azurite serves the blob API only, so there the job is what expires objects.
The job runs for both: it also catches objects the rule does not (written before it).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import structlog

from engine.destinations import Destination
from engine.flows import Flow
from engine.ids import id_timestamp_ms, is_valid_id
from engine.objects.contract import ObjectStore, directory
from engine.objects.errors import DestinationError
from engine.objects.s3 import S3Store
from engine.retention import DAY, Holding, cutoff
from streamers.layout import is_dead_letter_key, is_verification_key

log = structlog.get_logger(__name__)

_DAY_SEGMENT = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})/")
# A lead's steps (retries included) end within hours of its submission; its id says when.
LEAD_LAYOUT_GRACE = DAY


def object_time(prefix: str, key: str) -> datetime | None:
    """When the events of the object at ``key`` end, as far as its key says; None for
    what is not an event object (dead letters, verification probes, strangers)."""
    if is_dead_letter_key(prefix, key) or is_verification_key(prefix, key):
        return None
    day = _DAY_SEGMENT.search(key.removeprefix(directory(prefix)))
    if day is not None:
        try:
            return datetime.strptime(day.group(1), "%Y-%m-%d").replace(tzinfo=UTC) + DAY
        except ValueError:
            return None
    name = key.rsplit("/", 1)[-1].removesuffix(".json")
    if is_valid_id(name):
        ms = id_timestamp_ms(name)
        return datetime.fromtimestamp(ms / 1000, UTC) + LEAD_LAYOUT_GRACE
    return None


def lifecycle_rule_id(flow: Flow, destination: Destination) -> str:
    return f"leadflow-{flow.id}-{destination.key}"[:255]


def expire_objects(
    store: ObjectStore, flow: Flow, destination: Destination, now: datetime, *, dry_run: bool
) -> list[Holding]:
    """What ``destination`` holds for ``flow`` and what has expired at ``now``; unless
    ``dry_run``, the lifecycle rule set (S3) and the expired objects deleted."""
    name = f"objects {destination.name}"
    out: list[Holding] = []
    if isinstance(store, S3Store):
        days = max(1, math.ceil(flow.retention_days))
        action = f"lifecycle rule: expire after {days} d (from write)"
        if not dry_run:
            try:
                store.set_expiration(
                    lifecycle_rule_id(flow, destination), directory(destination.prefix), days
                )
            except DestinationError as exc:
                action = f"lifecycle rule refused ({exc.cause})"
        out.append(Holding(name, "lifecycle rule", 1, "rule", None, 0, action))
    prefix = destination.prefix
    keys = store.list_keys(directory(prefix))
    edge = cutoff(now, flow.retention_ms)
    times = [(k, t) for k in keys if (t := object_time(prefix, k)) is not None]
    expired = [k for k, t in times if t <= edge]
    removed = 0
    if not dry_run:
        for key in expired:
            store.delete(key)
            removed += 1
        if removed:
            log.info("objects expired", destination=destination.name, objects=removed)
    oldest = min((t for _, t in times), default=None)
    out.append(
        Holding(
            name,
            "event objects",
            len(times),
            "objects",
            oldest - DAY if oldest is not None else None,
            len(expired),
            "delete by key date",
            removed,
        )
    )
    return out
