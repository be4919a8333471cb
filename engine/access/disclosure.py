"""What leaves the API to a reader: masked, unless the key holds ``pii:read``, in which case
the read is recorded (who, when, which leads, which route) in ``engine_pii_reads``.

Every route that answers lead data passes it through ``disclose`` (or, for the streamed
exports, ``masker``), so the masking policy (``engine.masking``) is applied in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg

from engine.access.scopes import Principal
from engine.access.store import record_pii_read
from engine.masking import for_reader
from engine.state.keys import reveal_sealed


def lead_ids(value: Any) -> Iterator[str]:
    """Every ``lead_id`` (or ``lead.id``) value in a JSON-like answer."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k in ("lead_id", "lead.id") and isinstance(v, str):
                    yield v
                elif isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def disclose(
    conn: psycopg.Connection[Any],
    principal: Principal,
    route: str,
    value: Any,
    leads: Iterable[str] | None = None,
) -> Any:
    """``value`` as ``principal`` may see it; a clear-text read of any lead (``leads``, or
    every ``lead_id`` in ``value``) is audited. Sealed values are opened first
    (``engine.sealing``): clear for ``pii:read``, else masked; ``[erased]`` once a lead's
    key is deleted."""
    value = reveal_sealed(conn, value, sees_pii=principal.sees_pii)
    if principal.sees_pii:
        found = set(leads if leads is not None else lead_ids(value))
        if found:
            record_pii_read(conn, principal.key_id, route, found)
    return for_reader(value, sees_pii=principal.sees_pii)


def masker(principal: Principal) -> Callable[[Any], Any]:
    """The function an export applies to each row: identity (secrets masked) for ``pii:read``."""
    sees = principal.sees_pii
    return lambda row: for_reader(row, sees_pii=sees)
