"""The service guard (``tests.service_guard``): an unmarked test that touches the stack fails,
saying to mark it; a marked one connects; a local server of the test's own is no service.

Each case runs in a pytest of its own (pytester, in a subprocess: the guard patches the
process's sockets) whose "stack" is two listeners of this test, so nothing here needs,
or reaches, the real one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service_guard import MARK_IT

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[1]

CONFTEST = """
import pytest

pytest_plugins = ["tests.service_guard"]


@pytest.fixture(scope="session")
def stack():
    raise AssertionError("the stack fixture ran for an unmarked test")
"""

TESTS = """
import socket

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from engine.settings import Settings

PG_PORT = {pg_port}
IMPORTED = Settings()  # read before any test runs: the real addresses


def test_a_socket_to_postgres():
    socket.create_connection(("127.0.0.1", PG_PORT), timeout=1).close()


def test_a_refusal_the_code_swallows():
    try:
        socket.create_connection(("localhost", 9092), timeout=1).close()
    except OSError:
        pass


def test_libpq_through_the_settings():
    try:
        psycopg.connect(Settings().database_url.get_secret_value()).close()
    except psycopg.OperationalError:
        pass


def test_libpq_through_settings_read_at_import():
    try:
        psycopg.connect(IMPORTED.database_url.get_secret_value()).close()
    except psycopg.OperationalError:
        pass


def test_librdkafka_through_the_settings():
    admin = AdminClient({{"bootstrap.servers": Settings().kafka_bootstrap_servers}})
    try:
        admin.list_topics(timeout=1)
    except Exception:
        pass


def test_the_stack_fixture(stack):
    pass


@pytest.mark.stack
def test_marked_connects():
    socket.create_connection(("127.0.0.1", PG_PORT), timeout=1).close()
    assert f":{{PG_PORT}}/leadflow" in Settings().database_url.get_secret_value()


def test_a_server_of_its_own():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=1).close()
"""


@pytest.fixture
def fake_stack() -> Iterator[dict[str, int]]:
    """Two listening sockets standing for Kafka and Postgres; the kernel accepts for them."""
    with socket.socket() as kafka, socket.socket() as pg:
        for listener in (kafka, pg):
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
        yield {"kafka": kafka.getsockname()[1], "pg": pg.getsockname()[1]}


def test_an_unmarked_test_that_touches_a_service_fails_saying_to_mark_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake_stack: dict[str, int]
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("LEADFLOW_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{fake_stack['kafka']}")
    monkeypatch.setenv(
        "LEADFLOW_DATABASE_URL",
        f"postgresql://leadflow:leadflow@127.0.0.1:{fake_stack['pg']}/leadflow?connect_timeout=2",
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_cases=TESTS.format(pg_port=fake_stack["pg"]))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--timeout=60")

    result.assert_outcomes(passed=2, failed=5, errors=1)
    result.stdout.fnmatch_lines_random(
        [
            f"*::test_a_socket_to_postgres connected to postgres at 127.0.0.1:{fake_stack['pg']}"
            f" without the stack marker: {MARK_IT}",
            f"*::test_a_refusal_the_code_swallows connected to kafka at 127.0.0.1:9092"
            f" without the stack marker: {MARK_IT}",
            "*::test_libpq_through_the_settings connected to postgres at 127.0.0.1:*"
            f" without the stack marker: {MARK_IT}",
            "*::test_libpq_through_settings_read_at_import connected to postgres at"
            f" 127.0.0.1:{fake_stack['pg']} without the stack marker: {MARK_IT}",
            "*::test_librdkafka_through_the_settings connected to kafka (the settings' address)"
            f" without the stack marker: {MARK_IT}",
            f"*::test_the_stack_fixture uses the stack fixture without the stack marker: {MARK_IT}",
            "PASSED *::test_marked_connects",
            "PASSED *::test_a_server_of_its_own",
        ]
    )
