"""Shared fixtures: the real stack, found through the same settings the workers use.

``make test`` starts the local stack first (``stack/up.sh``); the fixtures
here only connect to it. A service that does not answer fails the test with
a clear message - tests never fall back to fakes.
"""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlparse

import pytest

from engine.settings import Settings


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The running stack; fails (never skips) when a service is down."""
    kafka_host, kafka_port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    pg = urlparse(settings.database_url.get_secret_value())
    s3 = urlparse(settings.s3_endpoint_url or "http://127.0.0.1:8333")
    down = [
        name
        for name, host, port in [
            ("kafka", kafka_host, int(kafka_port)),
            ("postgres", pg.hostname or "127.0.0.1", pg.port or 5432),
            ("s3", s3.hostname or "127.0.0.1", s3.port or 80),
            ("azurite", "127.0.0.1", 10000),
        ]
        if not _reachable(host, port)
    ]
    if down:
        pytest.fail(f"local stack not running ({', '.join(down)} down): run `make up` first")
    return settings


@pytest.fixture
def unique_id() -> str:
    """A fresh id for names that must not collide across tests and runs (flows, schemas)."""
    return "t" + uuid.uuid4().hex[:10]
