"""Retry delays shared by every worker that waits out an outage (Postgres, object storage)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float = 0.2, cap_s: float = 30.0) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential, capped, half of it jittered
    so that many workers recovering together do not retry in lockstep."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
