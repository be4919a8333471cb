"""Duplicate decisions as plain values: a lead's fingerprint, which lead came first, why.

A lead is a duplicate when the values of its flow's ``duplicate_fields`` (all
of them together, as normalised by the source's field parsers) match a lead
admitted earlier within ``duplicate_window_days``. "Earlier" is the total order
(submission time, lead id): of two matching leads exactly one is earlier, so
they can never reject each other, whatever order workers see them in.

Only a sha256 fingerprint of the values is ever stored, never the values (PII).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.fields import Scalar

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True, order=True)
class LeadOrder:
    """A lead's place in the total order: submission time, then lead id."""

    submitted_ms: int
    lead_id: str


def _normal(value: Scalar) -> str:
    # The source's parsers already normalised the value (email lower case,
    # phone digits only); case and surrounding space must not tell leads apart.
    return str(value).strip().casefold()


def fingerprint(flow_id: str, snapshot: dict[str, Scalar], fields: Sequence[str]) -> bytes | None:
    """sha256 of the flow and the lead's normalised ``fields``, or None when the
    lead has none of them (nothing to compare: it cannot be a duplicate).

    ``fields`` name lead fields (``email``) or snapshot keys (``lead.email``).
    The flow id is hashed in, so equal values in two flows give unrelated
    fingerprints. A missing field takes part as empty: a lead with an email and
    no phone matches only leads with that email and no phone.
    """
    values = []
    for name in sorted(set(fields)):
        key = name if name.startswith("lead.") else f"lead.{name}"
        value = snapshot.get(key)
        text = "" if value is None else _normal(value)
        values.append(f"{key}={text}")
    if all(v.endswith("=") for v in values):
        return None
    material = "\x1f".join([flow_id, *values])
    return hashlib.sha256(material.encode()).digest()


def earlier_match(
    lead: LeadOrder, candidates: Iterable[LeadOrder], window_days: int
) -> LeadOrder | None:
    """The most recent candidate that comes before ``lead`` and within the window,
    or None. A candidate equal to ``lead`` is the lead itself, never its duplicate."""
    oldest = lead.submitted_ms - window_days * DAY_MS
    before = [c for c in candidates if c < lead and c.submitted_ms > oldest]
    return max(before, default=None)


def duplicate_reason(earlier: LeadOrder) -> str:
    """``Duplicate: previously submitted 2026-03-01`` (the earlier lead's UTC date)."""
    day = datetime.fromtimestamp(earlier.submitted_ms / 1000, UTC).date()
    return f"Duplicate: previously submitted {day.isoformat()}"
