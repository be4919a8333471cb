"""What changed in a lead's data between two of its events: a pure function of two snapshots.

``vars`` is the lead's whole data as the step saw it, so diffing two events'
``vars`` shows every field a step (or several) added, removed or rewrote; the
later event's ``appended`` says what its own step appended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class SnapshotDiff:
    """Fields only in the later ``vars``, only in the earlier one, and in both with new values."""

    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    appended: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "appended": self.appended,
        }


def _same(a: Any, b: Any) -> bool:
    # Python says True == 1 == 1.0; a lead's data does not: "1" -> 1 or 1 -> true
    # is a change worth seeing. Canonical JSON compares type and value, nested too.
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def diff_snapshots(before: Mapping[str, Any], after: Mapping[str, Any]) -> SnapshotDiff:
    """The change in ``vars`` from event ``before`` to event ``after``, and ``after``'s appended."""
    old, new = _mapping(before.get("vars")), _mapping(after.get("vars"))
    return SnapshotDiff(
        added={k: v for k, v in new.items() if k not in old},
        removed={k: v for k, v in old.items() if k not in new},
        changed={
            k: {"before": old[k], "after": v}
            for k, v in new.items()
            if k in old and not _same(old[k], v)
        },
        appended=dict(_mapping(after.get("appended"))),
    )
