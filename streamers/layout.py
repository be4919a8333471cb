"""Where each event lands in a bucket: ``PREFIX/LEAD_ID/EVENT_ID.json``, deterministic per event.

A retried or replayed write always targets the same key, so create-only
writes make delivery exactly-once per key whatever happens to offsets.
"""

from __future__ import annotations

DEAD_LETTER_DIR = "_dead_letter"
# Zero-padded like Confluent's S3 sink, so keys list in offset order.
_OFFSET_DIGITS = 19


def normalise_prefix(prefix: str) -> str:
    """``"/a//b/"`` -> ``"a/b"``; ``""`` and ``"/"`` -> ``""`` (objects at the bucket root)."""
    return "/".join(part for part in prefix.split("/") if part)


def directory(prefix: str) -> str:
    """The prefix as a listing prefix: ``"a/b/"``, or ``""`` for the bucket root.

    The trailing slash matters: listing ``"demo"`` would also match ``"demo2/..."``.
    """
    norm = normalise_prefix(prefix)
    return f"{norm}/" if norm else ""


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


def dead_letter_key(prefix: str, topic: str, partition: int, offset: int) -> str:
    """The object key of an undecodable message, unique by its Kafka position."""
    name = f"{_segment(topic, 'topic')}+{partition}+{offset:0{_OFFSET_DIGITS}d}.bin"
    return f"{directory(prefix)}{DEAD_LETTER_DIR}/{name}"


def is_dead_letter_key(prefix: str, key: str) -> bool:
    return key.startswith(f"{directory(prefix)}{DEAD_LETTER_DIR}/")
