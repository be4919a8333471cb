"""Lead and event ids: 26-character Crockford base32, sortable, deterministic where it matters.

Lead ids are ULIDs (48-bit submission time in ms + 80 bits). Event ids are
derived, not random, so that re-running a step on the same input yields the
same ids and every consumer downstream can de-duplicate by id:

    48 bits  the lead's submission time (ms)
    56 bits  a hash of the lead id
    24 bits  the event's position in the lead's flow: step index, attempt, sequence

so ids sort by submission time, then lead, then position - the order of the
lead's timeline - even when several events share one millisecond.

Buyer feedback arrives days later, once per report, so its events take the
feedback's own time in place of the submission time, and position 255 (after
every step), then the feedback's place in its partition:

    48 bits  when the feedback was published (its Kafka timestamp)
    56 bits  a hash of the lead id
    24 bits  255, the feedback's offset modulo 2^15, the event's sequence (0 or 1)

so a lead's feedback sorts after its steps and in the order it was given.
"""

from __future__ import annotations

import hashlib
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
# Two digits (10 bits) per lookup: every event id is encoded on a step's hot path,
# and 13 lookups cost a third of 26 single-digit steps.
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]
_PAIR_SHIFTS = tuple(range(120, -1, -10))


def _encode128(value: int) -> str:
    """26 Crockford digits of a 128-bit value (130 bits, the top two zero)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def is_valid_id(text: str) -> bool:
    return len(text) == 26 and text[0] in "01234567" and all(c in _DECODE for c in text)


def id_timestamp_ms(text: str) -> int:
    """The millisecond timestamp in the first 48 bits of a lead or event id."""
    value = 0
    for c in text:
        value = (value << 5) | _DECODE[c]
    return value >> 80


def new_lead_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return _encode128((ms << 80) | int.from_bytes(os.urandom(10), "big"))


def derived_lead_id(ms: int, *parts: object) -> str:
    """A lead id for a lead that arrived without one: the same input position
    (topic, partition, offset) always gives the same id, so a replayed intake
    message does not become a second lead."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=10).digest()
    return _encode128((ms << 80) | int.from_bytes(digest, "big"))


def event_id(lead_id: str, submitted_ms: int, step_index: int, seq: int, attempt: int = 1) -> str:
    """Step ``step_index``'s event number ``seq`` on its ``attempt``-th try (1-based)."""
    if not (0 <= step_index < 256 and 0 <= seq < 256 and 1 <= attempt <= 256):
        raise ValueError(
            f"event position out of range: step {step_index}, attempt {attempt}, seq {seq}"
        )
    lead_hash = int.from_bytes(hashlib.blake2b(lead_id.encode(), digest_size=7).digest(), "big")
    position = (step_index << 16) | ((attempt - 1) << 8) | seq
    return _encode128((submitted_ms << 80) | (lead_hash << 24) | position)


FEEDBACK_STEP_INDEX = 255
_FEEDBACK_SLOTS = 1 << 15


def feedback_event_id(lead_id: str, published_ms: int, offset: int, seq: int) -> str:
    """Event ``seq`` (0 or 1) of the feedback published at ``published_ms`` at ``offset`` of
    its partition. Feedback is keyed by lead id, so a lead's feedback shares a partition and
    two reports collide only if 32,768 messages of that partition share one millisecond."""
    if not (0 <= seq < 2 and published_ms >= 0 and offset >= 0):
        raise ValueError(f"feedback position out of range: offset {offset}, seq {seq}")
    lead_hash = int.from_bytes(hashlib.blake2b(lead_id.encode(), digest_size=7).digest(), "big")
    position = (FEEDBACK_STEP_INDEX << 16) | ((offset % _FEEDBACK_SLOTS) << 1) | seq
    return _encode128((published_ms << 80) | (lead_hash << 24) | position)
