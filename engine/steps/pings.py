"""Ping decisions as plain values: what a ping may tell buyers, which bid wins, which limit
stops it and until when. The counting itself is ``engine.state`` (caps' counters)."""

from __future__ import annotations

import math
from typing import Any

from engine.intake.config import PingLimit, PingSettings
from engine.steps.cap_checks import CapCheck, CapCount, cap_checks, cap_label


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


def ping_limit_checks(
    flow_id: str, source_id: str, limits: list[PingLimit], at_ms: int
) -> list[CapCheck]:
    flow_limits = [limit for limit in limits if limit.scope == "flow"]
    source_limits = [limit for limit in limits if limit.scope == "source"]
    return cap_checks(f"ping:flow/{flow_id}", flow_limits, at_ms) + cap_checks(
        f"ping:source/{flow_id}/{source_id}", source_limits, at_ms
    )


def ping_limit_reason(count: CapCount) -> str:
    """``Ping limit reached: Minute cap (10/10)``."""
    spec = count.check.spec
    return f"Ping limit reached: {cap_label(spec)} ({count.count}/{spec.maximum})"


def retry_after_seconds(count: CapCount, at_ms: int) -> int:
    """Whole seconds until the full limit's period ends (at least 1)."""
    return max(1, math.ceil((count.check.window.end_ms - at_ms) / 1000))
