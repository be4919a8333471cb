"""Retention decisions: how long each store keeps a flow's data, and what is due to go.

One setting, ``Flow.retention_days`` (default 90), decides everything: the events'
``expires_at``, the topics' ``retention.ms``, which daily partitions of the timeline
are made ahead and which are dropped, and the cut-offs of the state tables, the
analytics rollups, the export files and the objects. These are pure functions of the
flows and a ``now``; the stores' I/O (``projectors.partitions``, ``engine.state.pruning``,
``engine.runtime.kafka.topics``, ``streamers.expiry``) acts on what they decide.

Stores that hold several flows' data in one place (the shared feedback topics, the
timeline's partitions, the analytics rollups, export files) keep it for the longest
retention of the flows they hold: nothing is removed before its own flow says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from engine.events import RETENTION_MS
from engine.flows import Flow
from engine.topics import flow_topics

DAY = timedelta(days=1)
# How many days of timeline partitions exist ahead of today: a projector that was down
# (or a clock a little ahead) still finds its partitions; a week is 7 empty tables.
PARTITIONS_AHEAD_DAYS = 7
PARTITION_PREFIX = "events_p"


def flow_topic_retention(flow: Flow) -> dict[str, int]:
    """``retention.ms`` of each of the flow's own topics (intake, events, retry, dead
    letters: every one holds the flow's leads), the flow's retention."""
    return {name: flow.retention_ms for name in flow_topics(flow)}


def topic_retention(flows: Sequence[Flow], shared: Iterable[str]) -> dict[str, int]:
    """``retention.ms`` of every flow's topics, and of the ``shared`` topics every flow
    writes to (buyer feedback and its rejects), which keep the longest of them."""
    plan: dict[str, int] = {}
    for flow in flows:
        plan |= flow_topic_retention(flow)
    longest = longest_retention_ms(flows)
    return plan | {name: longest for name in shared}


def longest_retention_ms(flows: Sequence[Flow]) -> int:
    """The longest retention among ``flows``; the default when there are none."""
    return max((f.retention_ms for f in flows), default=RETENTION_MS)


def cutoff(now: datetime, retention_ms: int) -> datetime:
    """The oldest time still kept: data from before it has expired."""
    return now - timedelta(milliseconds=retention_ms)


# -- the timeline's daily partitions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayPartition:
    """One daily partition of ``events``: rows with ``day <= ts < day + 1`` (UTC)."""

    day: date

    @property
    def name(self) -> str:
        return f"{PARTITION_PREFIX}{self.day:%Y%m%d}"

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(), UTC)

    @property
    def end(self) -> datetime:
        return self.start + DAY


def partition_of(name: str) -> DayPartition | None:
    """The day a partition's name stands for; None for a table that is not one of ours."""
    digits = name.removeprefix(PARTITION_PREFIX)
    if not name.startswith(PARTITION_PREFIX) or len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return DayPartition(datetime.strptime(name[len(PARTITION_PREFIX) :], "%Y%m%d").date())
    except ValueError:
        return None


def partitions_to_make(
    now: datetime, ahead_days: int = PARTITIONS_AHEAD_DAYS
) -> list[DayPartition]:
    """Yesterday (a late event), today and ``ahead_days`` more: what must exist at ``now``."""
    today = now.astimezone(UTC).date()
    return [DayPartition(today + timedelta(days=n)) for n in range(-1, ahead_days + 1)]


def partitions_to_drop(
    existing: Iterable[DayPartition], now: datetime, retention_ms: int
) -> list[DayPartition]:
    """The partitions whose every row has expired: they end at or before the cut-off."""
    edge = cutoff(now, retention_ms)
    return sorted((p for p in existing if p.end <= edge), key=lambda p: p.day)


def last_expired_day(now: datetime, retention_ms: int) -> date:
    """The latest UTC day all of whose data has expired (rollups by day go up to it)."""
    return (cutoff(now, retention_ms) - DAY).astimezone(UTC).date()


# -- what a store holds ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holding:
    """One thing a store holds, as ``leadflow retention status`` reports it: ``held``
    items (``unit``), the oldest of them, how many the next run removes (``expired``) and
    how (``action``); after ``apply --execute``, ``removed`` is what went."""

    store: str
    item: str
    held: int
    unit: str
    oldest: datetime | None
    expired: int
    action: str
    removed: int = 0
