"""How a source takes leads over HTTP: body formats, credentials by reference, waiting, pings.

A source step without ``intake`` is not reachable over HTTP (producers publish
to its intake topic directly). Credentials are never in the flow file, which
is recorded on a Kafka topic: ``auth`` names where the key lives - an
environment variable or a file (a mounted secret) - and that place holds the
key itself or ``sha256:<hex>`` of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from engine.caps import CapSpec
from engine.model import ConfigModel

BodyFormat = Literal["json", "form", "xml"]


class IntakeAuth(ConfigModel):
    """Where the source's API key is kept; exactly one of ``key_env`` or ``key_file``."""

    key_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    key_file: Path | None = None
    # The key is accepted in this header, or as the password of HTTP basic auth
    # (LeadConduit's habit: any user name, the key as password).
    header: str = "X-API-Key"

    @model_validator(mode="after")
    def _one_place(self) -> IntakeAuth:
        if (self.key_env is None) == (self.key_file is None):
            raise ValueError("auth needs exactly one of key_env or key_file")
        return self


class PingLimit(CapSpec):
    """At most ``maximum`` pings per ``duration``: for this source, or for the whole flow."""

    scope: Literal["source", "flow"] = "source"


class PingSettings(ConfigModel):
    # The only lead fields a ping sends to buyers: never name, email or phone.
    fields: Annotated[list[str], Field(min_length=1)]
    # How long a post may refer to the ping and get its price.
    ttl_seconds: Annotated[int, Field(ge=1, le=86_400)] = 300
    limits: list[PingLimit] = Field(default_factory=list)


def _json_only() -> list[BodyFormat]:
    return ["json"]


class IntakeSettings(ConfigModel):
    auth: IntakeAuth
    formats: Annotated[list[BodyFormat], Field(min_length=1)] = Field(default_factory=_json_only)
    # Which event answers the POST: the source's own verdict, or flow.completed
    # (the buyers' verdict too, for sources that want to know if the lead sold).
    wait_for: Literal["source", "completion"] = "source"
    timeout_ms: Annotated[int, Field(ge=100, le=120_000)] = 10_000
    max_body_bytes: Annotated[int, Field(ge=256, le=10_485_760)] = 65_536
    # Fields whose values are masked in the recorded request and in source.submitted.
    mask: list[str] = Field(default_factory=list)
    ping: PingSettings | None = None
