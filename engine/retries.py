"""Retry policy of a step that calls an external service: how often, and how long between."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from engine.model import ConfigModel


class RetrySettings(ConfigModel):
    """LeadConduit's delivery retries: up to 100 attempts, backing off from 10 s to 15 min."""

    attempts: Annotated[int, Field(ge=1, le=100)] = 5
    initial_backoff_ms: Annotated[int, Field(ge=10, le=3_600_000)] = 10_000
    max_backoff_ms: Annotated[int, Field(ge=10, le=86_400_000)] = 900_000
    multiplier: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise ValueError("max_backoff_ms must be at least initial_backoff_ms")
        return self

    def delay_ms(self, attempt: int) -> int:
        """Delay before attempt ``attempt`` (2, 3, ...): exponential from the initial backoff."""
        raw = self.initial_backoff_ms * self.multiplier ** max(0, attempt - 2)
        return int(min(self.max_backoff_ms, raw))
