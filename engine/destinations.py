"""Where a flow's events are streamed: S3 buckets and Azure Blob containers, as validated data.

Credentials are never values in a flow file: a destination names an
environment variable or a file holding each secret (``SecretRef``), resolved
by the streamer when it opens the store. A flow file (and the registry topic
that records it) can then be shared, logged and diffed without leaking a key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from engine.errors import ConfigError
from engine.model import ConfigModel

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class SecretRef(ConfigModel):
    """Where a secret is: exactly one of an environment variable's name or a file's path."""

    env: Annotated[str | None, Field(pattern=_ENV_NAME)] = None
    file: Annotated[str | None, Field(min_length=1, max_length=4096)] = None

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable's name) or file (a path)")
        return self

    def describe(self) -> str:
        """Where the secret comes from, for errors and status (never the secret)."""
        return f"env {self.env}" if self.env is not None else f"file {self.file}"

    def resolve(self) -> SecretStr:
        """The secret's value now; ``ConfigError`` naming the reference, never the value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(f"secret {self.describe()} is not set")
            return SecretStr(value)
        try:
            text = Path(str(self.file)).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"secret {self.describe()} cannot be read: {exc.strerror}") from None
        if not text:
            raise ConfigError(f"secret {self.describe()} is empty")
        return SecretStr(text)


class S3Credentials(ConfigModel):
    access_key_id: SecretRef
    secret_access_key: SecretRef


class AzureCredentials(ConfigModel):
    connection_string: SecretRef


class BatchSettings(ConfigModel):
    """When a batched object (``jsonl.gz``, ``avro``) is closed and written.

    Records and bytes close it deterministically (a retry writes the same
    object); ``max_seconds`` closes it on event time, and also bounds how long
    an event waits in a quiet partition.
    """

    max_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 64 * 1024 * 1024
    max_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60


class Deactivation(ConfigModel):
    """A destination failing without a success for this long, over at least this many
    attempts, is deactivated (``event_destination.deactivated``) instead of retried forever."""

    after_failures: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    after_seconds: Annotated[int, Field(ge=1, le=7 * 86_400)] = 900


Format = Literal["json", "jsonl.gz", "avro"]
Layout = Literal["lead", "time"]

_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Destination(ConfigModel):
    """One bucket or container of a flow, with its prefix, format and layout.

    * ``format: json`` — one object per event; ``layout: lead`` puts it at
      ``PREFIX/LEAD_ID/EVENT_ID.json`` (what LeadConduit's streaming writes),
      ``layout: time`` at ``PREFIX/flow_id=F/dt=YYYY-MM-DD/hour=HH/LEAD_ID/EVENT_ID.json``
      with the date and hour of the event's own timestamp (UTC).
    * ``format: jsonl.gz`` or ``avro`` — batched objects, one per topic
      partition and hour of event time, closed by ``batch``, named by topic,
      partition and first offset; always time-partitioned.
    """

    id: Annotated[str | None, Field(pattern=_ID)] = None
    kind: Literal["s3", "azure_blob"]
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    prefix: str = ""
    enabled: bool = True
    credentials: S3Credentials | AzureCredentials | None = None
    format: Format = "json"
    layout: Layout | None = None  # default: lead for json, time (the only one) when batched
    batch: BatchSettings = BatchSettings()
    deactivation: Deactivation = Deactivation()

    @model_validator(mode="after")
    def _consistent(self) -> Destination:
        if self.kind == "s3" and isinstance(self.credentials, AzureCredentials):
            raise ValueError("an s3 destination takes access_key_id and secret_access_key")
        if self.kind == "azure_blob" and isinstance(self.credentials, S3Credentials):
            raise ValueError("an azure_blob destination takes connection_string")
        if self.batched and self.layout == "lead":
            raise ValueError(f"format {self.format} holds many leads per object: layout is time")
        return self

    @property
    def batched(self) -> bool:
        return self.format != "json"

    @property
    def effective_layout(self) -> Layout:
        return "time" if self.batched else (self.layout or "lead")

    @property
    def key(self) -> str:
        """Stable identity within the flow: ``id``, or derived from kind, bucket and prefix."""
        if self.id is not None:
            return self.id
        prefix = re.sub(r"[^a-z0-9]+", "-", self.prefix.lower()).strip("-")
        return "-".join(part for part in (self.kind.replace("_", "-"), self.bucket, prefix) if part)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.bucket}/{self.prefix}"
