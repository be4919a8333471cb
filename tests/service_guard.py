"""A pytest plugin that fails a test touching the stack without ``@pytest.mark.stack``.

``make test-unit`` runs every test not marked ``stack`` with no service running, so a test
that quietly needs Kafka, Postgres, S3 or Azurite must fail here too, with the stack up,
instead of only on a machine without it. One check for each way in:

* a test that requests the ``stack`` fixture (itself or through another fixture) fails
  before any fixture runs;
* Python-level clients (boto3, the Azure SDK, httpx, plain sockets) are refused at
  ``socket.connect`` when they aim at one of the stack's ports;
* libpq connects from C, past Python's sockets, so its doors in Python,
  ``psycopg.connect`` and ``psycopg.Connection.connect`` (the pools'), are refused the same way;
* librdkafka has no such door, so while an unmarked test runs (its fixtures included) the
  settings' service addresses (``LEADFLOW_KAFKA_BOOTSTRAP_SERVERS``, ``LEADFLOW_DATABASE_URL``,
  ...) point at *sentinels*: listeners of this process that record each connection and close
  it at once. Subprocesses the test starts inherit them. A Kafka client built from settings
  read outside the test (while its module was imported) still has the real address:
  ``make test-unit`` with no stack running is what catches that one.

A connection refused or recorded this way fails the test even when the code under test
swallowed the error (a retry loop, a 503). Marked tests see the real addresses and sockets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import socket
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from engine.settings import Settings, get_settings

MARK_IT = "mark it @pytest.mark.stack"

# The stack's own ports on loopback (stack/README.md), besides the ones the settings name:
# a test aiming at the controller, a kafka3 node or a SeaweedFS component needs it just as much.
STACK_PORTS = {
    **{port: "kafka" for port in (9092, 9093, 19092, 19093, 29092, 29093, 39092, 39093)},
    # The 3-node cluster (stack/lib/ports.sh) and the SASL_SSL node (stack/kafka-secure.sh).
    **{port: "kafka" for port in (21092, 21093, 22092, 22093, 23092, 23093, 19094, 19095)},
    5433: "postgres",
    **{port: "s3" for port in (8333, 9333, 9340, 8888, 23646)},
    **{port: "azurite" for port in (10000, 10001, 10002)},
    # Apicurio Registry (stack/lib/registry.sh): HTTP API, management interface.
    **{port: "registry" for port in (8085, 9085)},
}

# The settings that name a service, by the variable that wins over its aliases.
SERVICE_VARIABLES = {
    "kafka": "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS",
    "postgres": "LEADFLOW_DATABASE_URL",
    "s3": "LEADFLOW_S3_ENDPOINT_URL",
    "azurite": "LEADFLOW_AZURE_STORAGE_CONNECTION_STRING",
    "registry": "LEADFLOW_SCHEMA_REGISTRY_URL",
}


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _service_addresses(settings: Settings) -> dict[tuple[str, int], str]:
    """(host, port) → service, for every address the settings name."""
    found: dict[tuple[str, int], str] = {}
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if port.isdigit():
            found[(host.strip("[]"), int(port))] = "kafka"
    pg = urlparse(settings.database_url.get_secret_value())
    found[(pg.hostname or "127.0.0.1", pg.port or 5432)] = "postgres"
    if settings.s3_endpoint_url:
        s3 = urlparse(settings.s3_endpoint_url)
        found[(s3.hostname or "127.0.0.1", s3.port or 80)] = "s3"
    azure = dict(
        part.split("=", 1)
        for part in settings.azure_storage_connection_string.get_secret_value().split(";")
        if "=" in part
    )
    if (endpoint := azure.get("BlobEndpoint")) is not None:
        blob = urlparse(endpoint)
        found[(blob.hostname or "127.0.0.1", blob.port or 80)] = "azurite"
    registry = urlparse(settings.schema_registry_url)
    found[(registry.hostname or "127.0.0.1", registry.port or 80)] = "registry"
    return found


class Sentinels:
    """One listener per service on loopback: each connection is recorded, then closed at once,
    so a C client fails fast ("server closed the connection") instead of waiting on a timeout."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._listeners: dict[str, socket.socket] = {}
        for service in SERVICE_VARIABLES:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, service)
            self._listeners[service] = listener
        self._stop = False
        self.hits: list[str] = []
        self._thread = threading.Thread(target=self._serve, name="service-sentinels", daemon=True)
        self._thread.start()

    def port(self, service: str) -> int:
        return int(self._listeners[service].getsockname()[1])

    def values(self) -> dict[str, str]:
        """The settings' variables pointing at the sentinels."""
        kafka, pg, s3, azure, registry = (self.port(s) for s in SERVICE_VARIABLES)
        return {
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
            # connect_timeout: libpq gives up at once rather than waiting on a silent server.
            "LEADFLOW_DATABASE_URL": (
                f"postgresql://leadflow:unused@127.0.0.1:{pg}/leadflow?connect_timeout=2"
            ),
            "LEADFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3}",
            "LEADFLOW_AZURE_STORAGE_CONNECTION_STRING": (
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                f"AccountKey=dW51c2Vk;BlobEndpoint=http://127.0.0.1:{azure}/devstoreaccount1;"
            ),
            "LEADFLOW_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{registry}/apis/ccompat/v7",
        }

    def _serve(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.2):
                listener: socket.socket = key.fileobj  # type: ignore[assignment]
                with contextlib.suppress(OSError):
                    conn, _ = listener.accept()
                    self.hits.append(key.data)
                    conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for listener in self._listeners.values():
            listener.close()
        self._selector.close()


@dataclass
class Guard:
    """The stack's addresses, the sentinels, and what the running unmarked test touched."""

    blocked: dict[tuple[str, int], str]
    sentinels: Sentinels
    active: bool = False
    exempt_threads: frozenset[threading.Thread] = frozenset()
    refused: list[str] = field(default_factory=list)

    def service_at(self, address: Any) -> str | None:
        """The stack service an ``AF_INET``/``AF_INET6`` address belongs to, if any."""
        if not (isinstance(address, tuple) and len(address) >= 2):
            return None  # AF_UNIX and the like: the stack is reached over TCP only
        host, port = str(address[0]), address[1]
        if not isinstance(port, int):
            return None
        if (host, port) in self.blocked:
            return self.blocked[(host, port)]
        if _is_loopback(host):
            loopback = {p: s for (h, p), s in self.blocked.items() if _is_loopback(h)}
            return loopback.get(port, STACK_PORTS.get(port))
        return None

    def refusal(self, address: Any) -> str | None:
        """Why a connection to ``address`` is refused (and remembered), or None to let it be.

        Threads that were running before the test began (a session fixture's workers,
        serving a marked module) are not the test's doing.
        """
        if not self.active or threading.current_thread() in self.exempt_threads:
            return None
        service = self.service_at(address)
        if service is None:
            return None
        message = f"connected to {service} at {address[0]}:{address[1]} without the stack marker"
        self.refused.append(message)
        return f"{message}: {MARK_IT}"


_guard: Guard | None = None
# Inherited from ``_socket.socket``: the patch is an attribute of the Python class, which
# every socket the standard library and the clients open is (``ssl.SSLSocket`` included).
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_pg_connect: classmethod[Any, Any, Any] = psycopg.Connection.__dict__["connect"]
_threads_before = pytest.StashKey[frozenset[threading.Thread]]()


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if _guard is not None and (refused := _guard.refusal(address)) is not None:
        raise ConnectionRefusedError(refused)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if _guard is not None and (refused := _guard.refusal(address)) is not None:
        raise ConnectionRefusedError(refused)
    return _real_connect_ex(self, address)


def _guarded_pg_connect(cls: type[Any], /, conninfo: str = "", **kwargs: Any) -> Any:
    """``psycopg.Connection.connect``, refused (as Postgres being down is) for the stack."""
    if _guard is not None:
        params = conninfo_to_dict(conninfo)
        hosts = str(kwargs.get("host") or params.get("host") or "").split(",")
        ports = str(kwargs.get("port") or params.get("port") or "5432").split(",")
        for host, port in zip(hosts, ports * len(hosts), strict=False):
            tcp = host and not host.startswith("/") and port.isdigit()
            if tcp and (refused := _guard.refusal((host, int(port)))) is not None:
                raise psycopg.OperationalError(refused)
    return _real_pg_connect.__func__(cls, conninfo, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    global _guard
    config.addinivalue_line("markers", "stack: needs the real local stack (tests.service_guard)")
    sentinels = Sentinels()
    blocked = _service_addresses(Settings())
    blocked.update({("127.0.0.1", sentinels.port(s)): s for s in SERVICE_VARIABLES})
    _guard = Guard(blocked, sentinels)
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]
    psycopg.Connection.connect = classmethod(_guarded_pg_connect)  # type: ignore[assignment,method-assign]
    psycopg.connect = psycopg.Connection.connect  # an alias bound when psycopg was imported


def pytest_unconfigure(config: pytest.Config) -> None:
    global _guard
    if _guard is None:
        return
    del socket.socket.connect, socket.socket.connect_ex  # the inherited ones again
    psycopg.Connection.connect = _real_pg_connect  # type: ignore[method-assign,assignment]
    psycopg.connect = psycopg.Connection.connect
    _guard.sentinels.close()
    _guard = None


def needs_stack(item: pytest.Item) -> bool:
    return item.get_closest_marker("stack") is not None


@contextlib.contextmanager
def _sentinel_env(guard: Guard) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in SERVICE_VARIABLES.values()}
    os.environ.update(guard.sentinels.values())
    get_settings.cache_clear()  # the CLI's settings, cached by an earlier test, are real
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()  # nor may a marked test inherit the sentinels


@contextlib.contextmanager
def _guarded(item: pytest.Item) -> Iterator[None]:
    """One phase of an unmarked test: sentinels and the socket guard on, then the verdict.

    The verdict replaces whatever the phase raised: a refused connection often surfaces as
    some other error (a 503, a retry that gave up), which would not say what to do.
    """
    guard = _guard
    if guard is None:  # the plugin is not configured (a pytester run without it)
        yield
        return
    if _threads_before not in item.stash:  # the test's first phase: before its fixtures
        running = frozenset(threading.enumerate()) - {threading.current_thread()}
        item.stash[_threads_before] = running
    first_hit = len(guard.sentinels.hits)
    guard.refused.clear()
    guard.exempt_threads = item.stash[_threads_before]
    guard.active = True
    failure: BaseException | None = None
    try:
        with _sentinel_env(guard):
            yield
    except BaseException as exc:
        failure = exc
    finally:
        guard.active = False
    touched = [*guard.refused]
    touched += [
        f"connected to {service} (the settings' address) without the stack marker"
        for service in dict.fromkeys(guard.sentinels.hits[first_hit:])
    ]
    if touched:
        verdict = f"{item.nodeid} {'; '.join(touched)}: {MARK_IT}"
        raise pytest.fail.Exception(verdict, pytrace=False) from None
    if failure is not None:
        raise failure


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture runs (the stack's own included), refuse the stack fixture."""
    if not needs_stack(item) and "stack" in getattr(item, "fixturenames", ()):
        pytest.fail(
            f"{item.nodeid} uses the stack fixture without the stack marker: {MARK_IT}",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True, specname="pytest_runtest_setup")
def guard_setup(item: pytest.Item) -> Generator[None, None, None]:
    if needs_stack(item):
        return (yield)
    with _guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if needs_stack(item):
        return (yield)
    with _guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    # After the last test the session's fixtures are torn down too (a marked test's stack,
    # its flows and topics): that is not the unmarked test's doing.
    if needs_stack(item) or nextitem is None:
        return (yield)
    with _guarded(item):
        return (yield)
