"""Ping decisions as plain values: what a ping may tell buyers, which bid wins, which limit
stops it and until when. The counting itself is ``engine.state`` (caps' counters)."""

from __future__ import annotations

import math
from typing import Any

from engine.intake.config import PingLimit, PingSettings
from engine.steps.cap_checks import CapCheck, CapCount, cap_checks, cap_key, cap_label


def ping_fields(data: dict[str, Any], settings: PingSettings) -> dict[str, Any]:
    """Only the fields the source lets a ping carry: buyers never see PII before a post."""
    return {name: data[name] for name in settings.fields if name in data}


def best_bid(answers: list[Any]) -> float | None:
    """The highest price among the buyers' answers; None when nobody bid."""
    prices = [
        float(a["price"])
        for a in answers
        if isinstance(a, dict)
        and a.get("bid", True) is not False
        and isinstance(a.get("price"), int | float)
        and not isinstance(a.get("price"), bool)
        and a["price"] > 0
    ]
    return max(prices) if prices else None


def _flow_scope(flow_id: str) -> str:
    return f"ping:flow/{flow_id}"


def _source_scope(flow_id: str, source_id: str) -> str:
    return f"ping:source/{flow_id}/{source_id}"


def ping_limit_checks(
    flow_id: str, source_id: str, limits: list[PingLimit], at_ms: int
) -> list[CapCheck]:
    flow_limits = [limit for limit in limits if limit.scope == "flow"]
    source_limits = [limit for limit in limits if limit.scope == "source"]
    return cap_checks(_flow_scope(flow_id), flow_limits, at_ms) + cap_checks(
        _source_scope(flow_id, source_id), source_limits, at_ms
    )


def ping_limit_objects(
    flow_id: str, source_id: str, limits: list[PingLimit], reached: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The limits as events record them (the schema's ``PingLimit``), flow-wide and the
    source's own: each with the id of its counter (the limit and its counter share it).
    ``reached``: the counter id of the limit that stopped a ping, if one did; every
    other limit was evaluated and not reached (with ``reached`` None: not evaluated)."""

    def one(scope: str, limit: PingLimit) -> dict[str, Any]:
        key = cap_key(scope, limit)
        return {
            "id": key,
            "name": limit.name,
            "maximum": limit.maximum,
            "duration": limit.duration,
            "time_zone": limit.time_zone,
            "reached": None if reached is None else key == reached,
        }

    flow_scope, source_scope = _flow_scope(flow_id), _source_scope(flow_id, source_id)
    return (
        [one(flow_scope, limit) for limit in limits if limit.scope == "flow"],
        [one(source_scope, limit) for limit in limits if limit.scope == "source"],
    )


def ping_limit_reason(count: CapCount) -> str:
    """``Ping limit reached: Minute cap (10/10)``."""
    spec = count.check.spec
    return f"Ping limit reached: {cap_label(spec)} ({count.count}/{spec.maximum})"


def retry_after_seconds(count: CapCount, at_ms: int) -> int:
    """Whole seconds until the full limit's period ends (at least 1)."""
    return max(1, math.ceil((count.check.window.end_ms - at_ms) / 1000))
