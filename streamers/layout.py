"""Where events land in a bucket; every key is a pure function of the event or its Kafka position.

* ``lead`` layout: ``PREFIX/LEAD_ID/EVENT_ID.json`` (LeadConduit's).
* ``time`` layout: ``PREFIX/flow_id=F/dt=YYYY-MM-DD/hour=HH/LEAD_ID/EVENT_ID.json``.
* batched objects: ``PREFIX/flow_id=F/dt=…/hour=…/TOPIC+PARTITION+FIRSTOFFSET.EXT``.

A retried or replayed write always targets the same key, so create-only
writes make delivery exactly-once per key whatever happens to offsets. Dates
come from the event's own timestamp (UTC), never the wall clock: a replay a
week later writes the same keys.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.objects.contract import directory

DEAD_LETTER_DIR = "_dead_letter"
# Zero-padded like Confluent's S3 sink, so keys list in offset order.
_OFFSET_DIGITS = 19


def _segment(value: str, what: str) -> str:
    # Ids become path segments: a slash or dot-segment would move the object
    # somewhere else (or collide with another lead), so refuse it outright.
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"{what} {value!r} cannot be a key segment")
    return value


def event_key(prefix: str, lead_id: str, event_id: str) -> str:
    """The object key of one event."""
    lead, event = _segment(lead_id, "lead id"), _segment(event_id, "event id")
    return f"{directory(prefix)}{lead}/{event}.json"


def time_partition(flow_id: str, timestamp: datetime) -> str:
    """Hive-style ``flow_id=F/dt=YYYY-MM-DD/hour=HH`` of an event time (converted to UTC)."""
    utc = timestamp.astimezone(UTC)
    return f"flow_id={_segment(flow_id, 'flow id')}/dt={utc:%Y-%m-%d}/hour={utc:%H}"


def time_event_key(
    prefix: str, flow_id: str, timestamp: datetime, lead_id: str, event_id: str
) -> str:
    """The object key of one event in the ``time`` layout."""
    lead, event = _segment(lead_id, "lead id"), _segment(event_id, "event id")
    return f"{directory(prefix)}{time_partition(flow_id, timestamp)}/{lead}/{event}.json"


def batch_key(
    prefix: str,
    flow_id: str,
    timestamp: datetime,
    topic: str,
    partition: int,
    first_offset: int,
    extension: str,
) -> str:
    """The key of a batched object: named by where its first record sits in Kafka, so
    a retry of the same records targets the same key."""
    name = f"{_segment(topic, 'topic')}+{partition}+{first_offset:0{_OFFSET_DIGITS}d}.{extension}"
    return f"{directory(prefix)}{time_partition(flow_id, timestamp)}/{name}"


def dead_letter_key(prefix: str, topic: str, partition: int, offset: int) -> str:
    """The object key of an undecodable message, unique by its Kafka position."""
    name = f"{_segment(topic, 'topic')}+{partition}+{offset:0{_OFFSET_DIGITS}d}.bin"
    return f"{directory(prefix)}{DEAD_LETTER_DIR}/{name}"


def is_dead_letter_key(prefix: str, key: str) -> bool:
    return key.startswith(f"{directory(prefix)}{DEAD_LETTER_DIR}/")


VERIFICATION_PREFIX = "leadflow_verification_"


def is_verification_key(prefix: str, key: str) -> bool:
    """A destination's verification probe (``streamers.verification``): deleted right after
    it is read back, but left behind when the process is killed in between."""
    name = key.removeprefix(directory(prefix))
    return "/" not in name and name.startswith(VERIFICATION_PREFIX) and name.endswith(".txt")
