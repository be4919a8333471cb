"""The invariants a chaos run must keep, as pure functions of what was expected and what was
found (so they are tested on crafted data, and can be seen to fail)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SinkCheck:
    """One place events are recorded (a topic set, Postgres, a bucket) against the expectation."""

    sink: str
    expected: int
    found: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_type: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.wrong_type)


def check_sink(
    sink: str, expected: Mapping[str, str], found: Iterable[tuple[str, str]]
) -> SinkCheck:
    """``expected``: event id -> type; ``found``: (event id, type) of every record in the sink.

    Every expected event exactly once with its type (one of ``a|b`` where an outcome may be
    either); nothing else."""
    found = list(found)
    counts = Counter(event_id for event_id, _ in found)
    types = dict(found)
    return SinkCheck(
        sink=sink,
        expected=len(expected),
        found=len(found),
        lost=sorted(set(expected) - set(counts)),
        duplicated=sorted(i for i, n in counts.items() if n > 1),
        unexpected=sorted(set(counts) - set(expected)),
        wrong_type=sorted(
            i for i, t in types.items() if i in expected and t not in expected[i].split("|")
        ),
    )


@dataclass(frozen=True)
class DeadLetterCheck:
    expected: int
    found: int
    missing: int
    extra: int

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0


def check_dead_letters(injected: Iterable[bytes], found: Iterable[bytes]) -> DeadLetterCheck:
    """The dead-letter topic holds exactly the injected poison messages, each once."""
    want, have = Counter(injected), Counter(found)
    return DeadLetterCheck(
        expected=sum(want.values()),
        found=sum(have.values()),
        missing=sum((want - have).values()),
        extra=sum((have - want).values()),
    )


def stuck_groups(lag: Mapping[str, int]) -> dict[str, int]:
    """Consumer groups with records still waiting for them once the run has settled."""
    return {group: n for group, n in sorted(lag.items()) if n > 0}


def lead_sequences_ok(
    expected: Mapping[str, list[str]], found: Mapping[str, list[str]]
) -> list[str]:
    """Leads whose timeline (event ids in id order, as Postgres serves it) is not exactly the
    expected sequence."""
    return sorted(
        lead for lead, ids in expected.items() if sorted(found.get(lead, [])) != sorted(ids)
    )
