"""``leadflow keys``: a key is shown once, stored only as a keyed hash, and created, rotated
or revoked keys take effect in a running API without a restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from engine.access.keys import digest
from engine.access.store import create_key, revoke_key
from engine.api.app import create_app
from engine.cli import app as cli
from engine.settings import Settings, get_settings
from projectors.store import connect
from tests.security.conftest import Seeded

pytestmark = pytest.mark.stack


@pytest.fixture
def keys_cli(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The CLI on the seeded schema."""
    monkeypatch.setenv("LEADFLOW_DB_SCHEMA", seeded.settings.db_schema)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _create(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(cli, ["keys", "create", *args])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    # Shown once, on stdout only: never in what the command logs or tells the operator.
    assert key.startswith("lf_") and key not in result.stderr
    return key


def _key_id(key: str) -> str:
    return key.split("_")[1]


def test_a_created_key_works_at_once_and_only_its_keyed_hash_is_stored(
    seeded: Seeded, keys_cli: CliRunner
) -> None:
    api = TestClient(create_app(seeded.settings))  # running before the key exists
    key = _create(keys_cli, "ops-ada", "--scope", "events:read")
    answer = api.get(f"/events/{seeded.delivery_a}", headers={"X-API-Key": key})
    assert answer.status_code == 200
    with connect(seeded.settings) as conn:
        row = conn.execute(
            "SELECT digest, scopes FROM engine_api_keys WHERE key_id = %s", (_key_id(key),)
        ).fetchone()
    assert row is not None
    stored, scopes = row
    assert bytes(stored) == digest(seeded.settings.api_key_pepper.get_secret_value(), key)
    assert key.encode() not in bytes(stored) and scopes == ["events:read"]
    listed = keys_cli.invoke(cli, ["keys", "list", "--json"])
    assert _key_id(key) in listed.stdout and key not in listed.stdout


def test_revoking_and_rotating_take_effect_without_a_restart(
    seeded: Seeded, keys_cli: CliRunner
) -> None:
    api = TestClient(create_app(seeded.settings))
    old = _create(keys_cli, "buyer-x", "--scope", "stats", "--flow", seeded.flow_a)
    path = f"/flows/{seeded.flow_a}/analytics/steps"
    assert api.get(path, headers={"X-API-Key": old}).status_code == 200
    rotated = keys_cli.invoke(cli, ["keys", "rotate", _key_id(old)])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip().splitlines()[-1]
    assert api.get(path, headers={"X-API-Key": old}).status_code == 401
    assert api.get(path, headers={"X-API-Key": new}).status_code == 200
    # The new key keeps the old one's flow restriction.
    other = f"/flows/{seeded.flow_b}/analytics/steps"
    assert api.get(other, headers={"X-API-Key": new}).status_code == 403
    assert keys_cli.invoke(cli, ["keys", "revoke", _key_id(new)]).exit_code == 0
    assert api.get(path, headers={"X-API-Key": new}).status_code == 401


def test_an_unknown_scope_is_refused_before_anything_is_stored(keys_cli: CliRunner) -> None:
    result = keys_cli.invoke(cli, ["keys", "create", "x", "--scope", "admin"])
    assert result.exit_code != 0
    assert "Unknown scope 'admin'" in result.output


def test_a_cached_key_is_trusted_only_for_the_cache_time(seeded: Seeded) -> None:
    """With a cache, a revoked key still works until its entry expires; never after."""
    settings: Settings = seeded.settings.model_copy(update={"api_key_cache_seconds": 3600.0})
    stored, key = create_key(settings, "cached", ["events:read"])
    api = TestClient(create_app(settings), headers={"X-API-Key": key})
    assert api.get(f"/events/{seeded.delivery_a}").status_code == 200
    revoke_key(settings, stored.key_id)
    assert api.get(f"/events/{seeded.delivery_a}").status_code == 200  # cached
    api.app.state.access.cache.clear()  # what the cache time's passing does
    assert api.get(f"/events/{seeded.delivery_a}").status_code == 401
