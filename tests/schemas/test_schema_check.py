"""``make schema-check``'s test: every schema in ``schemas/`` against the registry's versions.

Every ``.avsc`` (the history, oldest first, then ``lead_event.avsc``) is registered in order
under a fresh subject with the registry's BACKWARD mode: each must be accepted, and the
local check (``schemas.compatibility``) must agree with it. Then, for every subject the
registry holds for leadflow's topics, the current schema against the version registered
last there. A change that breaks compatibility fails here, naming the field.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator

import pytest

from engine.runtime.schema_registry import (
    SchemaIncompatibleError,
    SchemaRegistry,
    SchemaRegistryUnavailableError,
    value_subject,
)
from engine.settings import Settings
from schemas.codec import historical_schemas, load_schema
from schemas.compatibility import incompatibilities

pytestmark = pytest.mark.stack


@pytest.fixture
def registry_settings(settings: Settings) -> Settings:
    """The registry alone (``make schema-check`` starts nothing else); fails if it is down."""
    probe = SchemaRegistry(settings.schema_registry_url)
    try:
        probe.latest("leadflow.probe-value")
    except SchemaRegistryUnavailableError as exc:
        pytest.fail(f"schema registry not running ({exc}): run `make up` or `make schema-check`")
    finally:
        probe.close()
    return settings


@pytest.fixture
def fresh() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def registries() -> Iterator[list[SchemaRegistry]]:
    made: list[SchemaRegistry] = []
    yield made
    for registry in made:
        registry.close()


def every_version() -> list[dict]:  # type: ignore[type-arg]
    return [*historical_schemas(), load_schema()]


def test_every_schema_version_registers_in_order_under_backward(
    registry_settings: Settings, fresh: str, registries: list[SchemaRegistry]
) -> None:
    registry = SchemaRegistry(registry_settings.schema_registry_url)
    registries.append(registry)
    subject = value_subject(f"leadflow.{fresh}.events.check")
    ids = []
    for n, schema in enumerate(every_version()):
        if n:
            assert incompatibilities(schema, every_version()[n - 1]) == []
        ids.append(registry.register(subject, schema))
    assert len(set(ids)) == len(ids)  # each version a schema of its own
    assert registry.latest(subject) == load_schema()


def test_the_current_schema_reads_what_every_leadflow_subject_registered_last(
    registry_settings: Settings, registries: list[SchemaRegistry]
) -> None:
    registry = SchemaRegistry(registry_settings.schema_registry_url)
    registries.append(registry)
    sr = registry._sr()
    subjects = [s for s in sr.get_subjects() if s.startswith("leadflow.") and "events" in s]
    broken = {s: registry.problems(s, load_schema()) for s in subjects}
    assert {s: p for s, p in broken.items() if p} == {}


def test_an_incompatible_change_is_refused_by_the_registry_naming_the_field(
    registry_settings: Settings, fresh: str, registries: list[SchemaRegistry]
) -> None:
    registry = SchemaRegistry(registry_settings.schema_registry_url)
    registries.append(registry)
    subject = value_subject(f"leadflow.{fresh}.events.broken")
    registry.register(subject, load_schema())
    narrowed = copy.deepcopy(load_schema())
    next(f for f in narrowed["fields"] if f["name"] == "total_ms")["type"] = "int"
    with pytest.raises(SchemaIncompatibleError) as refused:
        registry.register(subject, narrowed)
    assert refused.value.problems == ["total_ms: writer long is not readable as int"]
    assert "total_ms" in str(refused.value)
