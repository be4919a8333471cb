"""Shared fixtures: the real stack, found through the same settings the workers use.

``make test`` starts the local stack first (``stack/up.sh``); the fixtures
here only connect to it. A service that does not answer fails the test with
a clear message - tests never fall back to fakes. Only tests marked
``@pytest.mark.stack`` may use it (``tests.service_guard`` fails the others),
which is what lets ``make test-unit`` run everything else with no stack at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from hypothesis import settings as hypothesis_settings

from engine.demo.buyer import BuyerServer
from engine.settings import Settings
from tests.keys import ENVIRONMENT

pytest_plugins = ["tests.service_guard"]

# The CLIs print rich tables sized to the terminal; a test runs in none (and under
# pytest-xdist in a worker without even a parent tty), so fix one wide enough that
# ids and paths are never wrapped in the output the tests read.
os.environ["COLUMNS"] = "200"
# Every route needs a key: the tests' own (tests/keys.py), configured before any Settings.
os.environ.update(ENVIRONMENT)

# Hypothesis' per-example deadline (200 ms) is a wall-clock bound: on a loaded two-core CI
# machine an example of a correct codec took 321 ms and failed. What the property tests
# specify is behaviour; time is the bench's (`make bench`).
hypothesis_settings.register_profile("leadflow", deadline=None)
hypothesis_settings.load_profile("leadflow")


GROUPING_LOST = (
    "--dist loadgroup lost this test's xdist_group: this pytest and pytest-xdist do not group"
    " (pytest-dev/pytest-xdist#1386), so the groups' shared set-ups would run once per worker"
    " and their tests side by side; see the pin in pyproject.toml"
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (``make test``), each ``xdist_group``ed test must carry its
    group in its node id, which is how pytest-xdist sends a group to one worker. A test whose
    group was dropped fails, saying why, rather than running beside its group's others."""
    if not config.getoption("loadgroup", default=False):  # set only in an xdist worker
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            item.stash[_GROUP_LOST] = True


_GROUP_LOST = pytest.StashKey[bool]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.stash.get(_GROUP_LOST, False):
        pytest.fail(GROUPING_LOST, pytrace=False)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def settings() -> Settings:
    """The settings as a worker would read them: the stack's in a marked test, the guard's
    sentinels in any other (so a unit test that connects fails, saying so)."""
    return Settings()


def _down_services(settings: Settings) -> list[str]:
    kafka_host, kafka_port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    pg = urlparse(settings.database_url.get_secret_value())
    s3 = urlparse(settings.s3_endpoint_url or "http://127.0.0.1:8333")
    registry = urlparse(settings.schema_registry_url)
    return [
        name
        for name, host, port in [
            ("kafka", kafka_host, int(kafka_port)),
            ("postgres", pg.hostname or "127.0.0.1", pg.port or 5432),
            ("s3", s3.hostname or "127.0.0.1", s3.port or 80),
            ("azurite", "127.0.0.1", 10000),
            ("registry", registry.hostname or "127.0.0.1", registry.port or 80),
        ]
        if not _reachable(host, port)
    ]


def _docker_engine_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def _ensure_bucket_and_container(settings: Settings) -> None:
    """What ``stack/up.sh`` does after start: the bucket and container the flows name."""
    import boto3
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    secret = settings.aws_secret_access_key
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
    )
    if settings.s3_bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=settings.s3_bucket)
    conn = settings.azure_storage_connection_string.get_secret_value()
    with (
        BlobServiceClient.from_connection_string(conn) as blobs,
        contextlib.suppress(ResourceExistsError),
    ):
        blobs.create_container(settings.azure_container)


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The running stack; fails (never skips) when a service is down, and fails a test
    without ``@pytest.mark.stack`` before connecting (``tests.service_guard``).

    With no local stack but a Docker engine, the same services come up from
    ``compose.yaml`` through testcontainers: same ports, same credentials,
    so the same settings reach them.
    """
    settings = Settings()  # first requested by a marked test: the real addresses
    down = _down_services(settings)
    if down and _docker_engine_available():
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # Each xdist worker would start its own copy of the same ports.
            pytest.fail("start the stack once first (docker compose up -d), or TEST_WORKERS=0")
        from testcontainers.compose import DockerCompose

        root = Path(__file__).parents[1]
        compose = DockerCompose(root, compose_file_name="compose.yaml", wait=True)
        compose.start()
        _ensure_bucket_and_container(settings)
        try:
            yield settings
        finally:
            compose.stop()
        return
    if down:
        pytest.fail(f"local stack not running ({', '.join(down)} down): run `make up` first")
    yield settings


@pytest.fixture
def buyer() -> Iterator[BuyerServer]:
    """The local buyer on a free port; it accepts every lead unless the lead's
    email carries one of its markers (``+reject``, ``+error``, ``+slow``)."""
    server = BuyerServer(port=0, mix=False)
    server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def unique_id(request: pytest.FixtureRequest, settings: Settings) -> Iterator[str]:
    """A fresh id for names that must not collide across tests and runs (flows, schemas).

    Topics named after it are deleted afterwards, so a developer's stack does
    not accumulate test flows that the demo's all-flows projector then reads.
    An unmarked test cannot have made any (and must not connect to look).
    """
    value = "t" + uuid.uuid4().hex[:10]
    yield value
    if request.node.get_closest_marker("stack") is not None:
        _delete_topics_of(settings, value)
        _drop_schemas_of(settings, value)


def _drop_schemas_of(settings: Settings, unique: str) -> None:
    """Drop the schema named ``unique`` and its projections' generation schemas
    (``<unique>_timeline_1``...), which dropping the serving schema leaves behind."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            names = [
                name
                for (name,) in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
                    (unique, unique + "\\_%"),
                ).fetchall()
            ]
            for name in names:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
    except Exception as exc:  # cleanup must never fail a test that passed
        print(f"could not drop test schemas of {unique}: {exc}")


def _delete_topics_of(settings: Settings, unique: str) -> None:
    from confluent_kafka.admin import AdminClient

    from engine.runtime.kafka.config import admin_config

    try:
        admin = AdminClient(admin_config(settings))
        names = [t for t in admin.list_topics(timeout=5).topics if unique in t]
        if names:
            for future in admin.delete_topics(names, operation_timeout=10).values():
                future.result()
    except Exception as exc:  # cleanup must never fail a test that passed
        print(f"could not delete test topics of {unique}: {exc}")
