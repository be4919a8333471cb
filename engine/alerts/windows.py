"""A sliding window of samples in fixed buckets: counts, sums, reasons and example leads.

The window over ``[now - width, now)`` is read as the buckets it overlaps, each
``width / 60`` wide (at least a second), so its edge moves in steps of a bucket: a
window of an hour keeps 61 small aggregates however many events it sees, and is cheap to
store as one JSON value beside the consumer's offsets. Samples are bucketed by the
event's own time; one older than the window when it arrives changes nothing (a replay of
last week's events raises no alert today).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.alerts.samples import Sample

BUCKETS_PER_WINDOW = 60
MAX_REASONS_PER_BUCKET = 20
EXAMPLES_PER_BUCKET = 5
OTHER_REASONS = "(other reasons)"


@dataclass(slots=True)
class Bucket:
    count: int = 0
    total: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.count += 1
        self.total += sample.value
        if not sample.bad:
            return
        if sample.reason is not None:
            # Bounded: a reason quoting each lead's own value must not grow the state.
            key = sample.reason
            if key not in self.reasons and len(self.reasons) >= MAX_REASONS_PER_BUCKET:
                key = OTHER_REASONS
            self.reasons[key] = self.reasons.get(key, 0) + 1
        if sample.lead_id and sample.lead_id not in self.examples:
            self.examples = [*self.examples, sample.lead_id][-EXAMPLES_PER_BUCKET:]


@dataclass(frozen=True, slots=True)
class Reading:
    """What a window holds at one moment."""

    count: int
    total: float
    reasons: list[tuple[str, int]]  # most frequent first
    examples: list[str]  # newest last


@dataclass(slots=True)
class SlidingWindow:
    width_ms: int
    buckets: dict[int, Bucket] = field(default_factory=dict)  # bucket start (epoch ms) -> bucket

    @property
    def bucket_ms(self) -> int:
        return max(1000, self.width_ms // BUCKETS_PER_WINDOW)

    def _start(self, now_ms: int) -> int:
        return now_ms - self.width_ms

    def add(self, sample: Sample, now_ms: int) -> bool:
        """Count ``sample``; False (and nothing counted) when it is older than the window."""
        start = sample.at_ms - sample.at_ms % self.bucket_ms
        if start + self.bucket_ms <= self._start(now_ms):
            return False
        self.buckets.setdefault(start, Bucket()).add(sample)
        return True

    def prune(self, now_ms: int) -> None:
        """Forget the buckets that ended before the window starts."""
        edge = self._start(now_ms)
        for start in [s for s in self.buckets if s + self.bucket_ms <= edge]:
            del self.buckets[start]

    def read(self, now_ms: int) -> Reading:
        edge = self._start(now_ms)
        live = [(s, b) for s, b in sorted(self.buckets.items()) if s + self.bucket_ms > edge]
        reasons: Counter[str] = Counter()
        examples: list[str] = []
        for _, bucket in live:
            reasons.update(bucket.reasons)
            examples.extend(bucket.examples)
        return Reading(
            count=sum(b.count for _, b in live),
            total=sum(b.total for _, b in live),
            reasons=reasons.most_common(),
            examples=examples,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "width_ms": self.width_ms,
            "buckets": {
                str(s): {"n": b.count, "sum": b.total, "reasons": b.reasons, "examples": b.examples}
                for s, b in self.buckets.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], width_ms: int) -> SlidingWindow:
        """The stored window; a rule whose width changed since starts empty (its buckets were
        cut for the old width)."""
        if data.get("width_ms") != width_ms:
            return cls(width_ms)
        buckets = {
            int(s): Bucket(b["n"], b["sum"], dict(b["reasons"]), list(b["examples"]))
            for s, b in data.get("buckets", {}).items()
        }
        return cls(width_ms, buckets)
