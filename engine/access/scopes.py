"""What a key may do: its scopes and the flows it is restricted to.

Pure values, no I/O: the guard (``engine.access.guard``) builds a ``Principal``
from a key and the routes ask it questions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.settings import SCOPE_PATTERN

# The UI keys' older scope names, read as the scopes they always granted.
_LEGACY = {"read": ("events:read", "stats", "exports"), "pii": ("pii:read",)}
_SCOPE = re.compile(SCOPE_PATTERN)


class ScopeError(ValueError):
    """A scope that is not one leadflow knows."""


def parse_scopes(values: Iterable[str]) -> frozenset[str]:
    """``values`` checked and with the legacy names expanded; ``ScopeError`` names a bad one."""
    scopes: set[str] = set()
    for value in values:
        if not _SCOPE.match(value):
            raise ScopeError(
                f"Unknown scope {value!r}: use events:read, pii:read, exports, stats,"
                " flows:admin, intake:<source>|intake:*, feedback:<recipient>|feedback:*"
            )
        scopes.update(_LEGACY.get(value, (value,)))
    return frozenset(scopes)


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a valid key. ``key_id`` is what audit rows and logs name (never the key);
    ``flows`` None means every flow."""

    key_id: str
    name: str
    scopes: frozenset[str]
    flows: frozenset[str] | None = None
    rate_per_minute: int | None = None

    def has(self, scope: str) -> bool:
        """True if the key holds ``scope``; ``intake:x``/``feedback:x`` also by their ``*``."""
        if scope in self.scopes:
            return True
        kind, sep, _ = scope.partition(":")
        return bool(sep) and kind in ("intake", "feedback") and f"{kind}:*" in self.scopes

    @property
    def sees_pii(self) -> bool:
        return "pii:read" in self.scopes

    def sees_flow(self, flow_id: str | None) -> bool:
        return self.flows is None or (flow_id is not None and flow_id in self.flows)

    def feedback_recipients(self) -> frozenset[str] | None:
        """The recipients this key may give feedback for; None: any."""
        if "feedback:*" in self.scopes:
            return None
        return frozenset(
            s.removeprefix("feedback:") for s in self.scopes if s.startswith("feedback:")
        )
