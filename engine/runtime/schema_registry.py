"""The schema registry at the edge: register the event schema, look writer schemas up by id.

Registry mode (``LEADFLOW_EVENT_ENCODING=registry``) frames events in the Confluent wire
format with the id the registry gave ``schemas/lead_event.avsc`` under ``<topic>-value``
(the TopicNameStrategy every Confluent-format tool assumes). The registry is any
Confluent-compatible API: the stack runs Apicurio Registry's (``/apis/ccompat/v7``).

Its compatibility mode for leadflow's subjects is BACKWARD: a new schema must read every
event of the last one (``schemas.compatibility``). FULL would also make the last one read
the new one's events, which refuses every widening, such as v4's ``int`` → ``long``.

The step's bytes stay fastavro's (``schemas.codec`` with the registered id in front): the
registry is asked once per subject at start, and once per unknown id when reading, never
per record. Driver errors are translated here: ``SchemaRegistryUnavailableError`` (the
registry could not be asked: wait, retry) and ``SchemaIncompatibleError`` (it refused the
schema: the field that broke is named).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import threading
import time
import warnings
from collections.abc import Iterable
from functools import cache
from typing import Any

import httpx
import structlog

# authlib (the client's OAuth dependency) warns on import that its httpx module is
# deprecated, under a filter of its own that says "always": every command would print it
# above its own output. Recorded here and dropped; not ours to act on.
with warnings.catch_warnings(record=True):
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    # The module that imports authlib's httpx in clients >= 2.16; the bench's venv runs
    # an older client (its peer pins it), which has no such module.
    with contextlib.suppress(ImportError):
        from confluent_kafka.schema_registry.common import _httpx_compat  # noqa: F401

from engine.errors import LeadflowError
from engine.settings import Settings
from schemas.codec import EventCodec, load_schema
from schemas.compatibility import incompatibilities

# What the client raises when no answer came at all (refused, reset, timed out):
# confluent-kafka >= 2.16 talks through httpx2 where it is installed, else httpx.
_NO_ANSWER: tuple[type[BaseException], ...] = (OSError, httpx.HTTPError)
try:
    from confluent_kafka.schema_registry.common._httpx_compat import httpx as _client_httpx

    _NO_ANSWER += (_client_httpx.HTTPError,)
except ImportError:  # pragma: no cover - older confluent-kafka: plain httpx
    pass

log = structlog.get_logger(__name__)

COMPATIBILITY = "BACKWARD"
# Seconds a registry request may take before it counts as no answer (and is retried).
REQUEST_TIMEOUT_S = 10
# The registry's own error codes (Confluent's API, which Apicurio's ccompat serves).
_SUBJECT_NOT_FOUND, _SCHEMA_NOT_FOUND = 40401, 40403


class SchemaRegistryUnavailableError(LeadflowError):
    """The registry did not answer (down, unreachable, a 5xx): nothing about the data."""


class SchemaIncompatibleError(LeadflowError):
    """The registry refused the schema under a subject: what broke, field by field."""

    def __init__(self, subject: str, problems: list[str]) -> None:
        super().__init__(
            f"schema for {subject} is not {COMPATIBILITY} compatible with the version"
            f" registered last: {'; '.join(problems) or 'the registry says so'}"
        )
        self.subject = subject
        self.problems = problems


def value_subject(topic: str) -> str:
    return f"{topic}-value"


class SchemaRegistry:
    """confluent-kafka's ``SchemaRegistryClient`` (it caches ids and schemas) with leadflow's
    errors. The client is made at first use, so a reader that never meets a wire-format
    event never talks to a registry."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: SchemaRegistryClient | None = None
        self._lock = threading.Lock()

    def _sr(self) -> SchemaRegistryClient:
        with self._lock:
            if self._client is None:
                # No retries inside the client: the callers' own loops retry, logging
                # each try (start-up), or rewind and read again (a step's decode). A
                # deadline on every request: the client's default is none, and a registry
                # that accepts a connection and never answers (one did, in CI) would stall
                # the worker for ever instead of making it retry.
                self._client = SchemaRegistryClient(
                    {"url": self.url, "max.retries": 0, "timeout": REQUEST_TIMEOUT_S}
                )
            return self._client

    def close(self) -> None:
        """Close the client's HTTP connections (a cached registry lives as its process)."""
        with self._lock:
            if self._client is not None:
                # ``__exit__`` closes the HTTP session on every version (``close()`` came
                # in 2.13; the bench venv runs 2.12).
                self._client.__exit__(None, None, None)  # type: ignore[no-untyped-call]  # untyped upstream
                self._client = None

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """The id of ``schema`` under ``subject``, registering it (with the subject's
        compatibility mode) if it is new there. Idempotent: same schema, same id."""
        sr = self._sr()
        try:
            sr.set_compatibility(subject, COMPATIBILITY)
            return sr.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise SchemaIncompatibleError(subject, self.problems(subject, schema)) from exc
            if exc.http_status_code >= 500:
                raise SchemaRegistryUnavailableError(f"{self.url}: {exc}") from exc
            raise
        except _NO_ANSWER as exc:
            raise SchemaRegistryUnavailableError(f"{self.url}: {exc}") from exc

    def latest(self, subject: str) -> dict[str, Any] | None:
        """The schema registered last under ``subject``; None if the subject has none."""
        try:
            found = self._sr().get_latest_version(subject)
        except SchemaRegistryError as exc:
            if exc.error_code == _SUBJECT_NOT_FOUND or exc.http_status_code == 404:
                return None
            raise SchemaRegistryUnavailableError(f"{self.url}: {exc}") from exc
        except _NO_ANSWER as exc:
            raise SchemaRegistryUnavailableError(f"{self.url}: {exc}") from exc
        parsed: dict[str, Any] = json.loads(found.schema.schema_str or "{}")
        return parsed

    def problems(self, subject: str, schema: dict[str, Any]) -> list[str]:
        """Why ``schema`` cannot read the events of the version registered last (BACKWARD)."""
        last = self.latest(subject)
        return [] if last is None else incompatibilities(schema, last)

    def resolve(self, schema_id: int) -> dict[str, Any] | None:
        """The writer schema registered under ``schema_id``; None if the registry has none."""
        try:
            found = self._sr().get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.error_code == _SCHEMA_NOT_FOUND or exc.http_status_code == 404:
                return None
            raise SchemaRegistryUnavailableError(f"{self.url}: {exc}") from exc
        except _NO_ANSWER as exc:
            raise SchemaRegistryUnavailableError(f"{self.url}: {exc}") from exc
        parsed: dict[str, Any] = json.loads(found.schema_str or "{}")
        return parsed


@cache
def registry_for(url: str) -> SchemaRegistry:
    """One client per registry per process: its caches are shared by every codec. Its
    connections are closed at exit (left to the garbage collector, each is a warning)."""
    registry = SchemaRegistry(url)
    atexit.register(registry.close)
    return registry


def register_until_up(
    registry: SchemaRegistry,
    subjects: Iterable[str],
    schema: dict[str, Any],
    retry_s: float,
    stop: threading.Event | None = None,
) -> int:
    """Register ``schema`` under every subject, waiting (one log line per try) while the
    registry is down: a step never writes an event it could not frame. An incompatible
    schema raises at once, naming the field. One id for all subjects (the registry's ids
    are global per schema), or the step's events could not share one codec."""
    ids: set[int] = set()
    for subject in subjects:
        attempt = 0
        while True:
            attempt += 1
            try:
                ids.add(registry.register(subject, schema))
                break
            except SchemaRegistryUnavailableError as exc:
                log.warning(
                    "schema registry unavailable, waiting before the next try",
                    registry=registry.url,
                    subject=subject,
                    attempt=attempt,
                    retry_in_s=retry_s,
                    error=str(exc),
                )
                if stop is not None and stop.wait(retry_s):
                    raise
                if stop is None:
                    time.sleep(retry_s)
    if len(ids) != 1:
        raise LeadflowError(f"the registry gave one schema several ids: {sorted(ids)}")
    return ids.pop()


def reading_codec(settings: Settings) -> EventCodec:
    """A codec that writes single-object encoding and reads both encodings, resolving
    unknown schema ids through the registry (projectors, streamers, any decoder)."""
    return EventCodec(resolve=registry_for(settings.schema_registry_url).resolve)


def step_codec(
    settings: Settings, topics: Iterable[str], stop: threading.Event | None = None
) -> EventCodec:
    """The codec a writer of ``topics`` uses under the deployment's encoding: in registry
    mode, the current schema registered under each topic's subject (waiting for the
    registry if it is down), its id in front of every event."""
    registry = registry_for(settings.schema_registry_url)
    if settings.event_encoding != "registry":
        return EventCodec(resolve=registry.resolve)
    schema = load_schema()
    subjects = [value_subject(t) for t in topics]
    schema_id = register_until_up(
        registry, subjects, schema, settings.schema_registry_retry_s, stop
    )
    log.info("event schema registered", subjects=subjects, schema_id=schema_id)
    return EventCodec(schema_id=schema_id, resolve=registry.resolve)


class TopicCodecs:
    """The codec for each topic a writer meets as it goes (the feedback worker writes to
    every flow's feedback events topic, the API's pings to each source's): in registry
    mode the topic's subject is registered at its first event, one try, and a registry
    down raises ``SchemaRegistryUnavailableError`` for the caller to retry (the feedback
    worker aborts and reads again; a ping answers 503). The registry's ids are global
    per schema, so every topic's codec is the same one once its subject is registered."""

    def __init__(self, settings: Settings) -> None:
        self._registry = registry_for(settings.schema_registry_url)
        self._registry_mode = settings.event_encoding == "registry"
        self._reading = EventCodec(resolve=self._registry.resolve)
        self._framed: EventCodec | None = None
        self._subjects: set[str] = set()
        self._lock = threading.Lock()

    def for_topic(self, topic: str) -> EventCodec:
        if not self._registry_mode:
            return self._reading
        subject = value_subject(topic)
        with self._lock:
            if subject in self._subjects and self._framed is not None:
                return self._framed
        schema_id = self._registry.register(subject, load_schema())
        with self._lock:
            if self._framed is None or self._framed.schema_id != schema_id:
                self._framed = EventCodec(schema_id=schema_id, resolve=self._registry.resolve)
            self._subjects.add(subject)
            return self._framed


def register_topics(settings: Settings, topics: Iterable[str]) -> int | None:
    """``flow apply`` in registry mode: the current schema under every event topic's subject,
    one try each. Refused (``SchemaIncompatibleError``, the field named) or unreachable
    (``SchemaRegistryUnavailableError``), the flow is not applied. None in single-object
    mode, where no registry is asked."""
    if settings.event_encoding != "registry":
        return None
    registry = registry_for(settings.schema_registry_url)
    ids = {registry.register(value_subject(topic), load_schema()) for topic in topics}
    if len(ids) != 1:
        raise LeadflowError(f"the registry gave one schema several ids: {sorted(ids)}")
    return ids.pop()
