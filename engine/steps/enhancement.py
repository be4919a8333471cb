"""Enhancements: call a validation/append service and keep what it returns under ``appended.<key>``.

Records ``enhancement.success`` (data appended), ``enhancement.failure`` (the
service answered that it could not help, e.g. phone not found) or
``enhancement.error`` (timeout, 5xx, unreadable answer). Neither stops the
lead unless the step is marked ``required``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, HttpUrl

from engine.model import ConfigModel
from engine.retries import RetrySettings


class EnhancementSettings(ConfigModel):
    url: HttpUrl
    key: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    format: Literal["json", "form"] = "json"
    timeout_ms: Annotated[int, Field(gt=0, le=120_000)] = 5000
    mapping: dict[str, str] = Field(default_factory=dict)
    success: dict[str, Any] = Field(default_factory=lambda: {"path": "outcome", "value": "success"})
    reason_path: str = "reason"
    required: bool = False
    retry: RetrySettings | None = None
