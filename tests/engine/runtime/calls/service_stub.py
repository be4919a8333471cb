"""A real local HTTP service for call runner tests, misbehaving on request by path.

``/ok`` answers JSON at once; ``/slow?ms=N`` after N ms; ``/trickle`` sends its
headers then a byte every 100 ms, for ever; ``/huge?mb=N`` a body of N MiB;
``/echo`` the request's headers back; ``/redirect`` a 302 to itself; ``/garbage``
bytes that are not HTTP; ``/hangup`` closes without an answer; ``/silent`` never
answers (until the client goes). It counts requests, the idempotency keys it saw,
and the peak of requests in flight.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


class _Handler(BaseHTTPRequestHandler):
    server: ServiceStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _client_gone(self, timeout: float) -> bool:
        readable, _, _ = select.select([self.connection], [], [], timeout)
        return bool(readable) and self.connection.recv(1, 0) == b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.server.lock:
            self.server.requests += 1
            self.server.keys.append(self.headers.get("Idempotency-Key", ""))
            self.server.headers.append(dict(self.headers))
            self.server.now += 1
            self.server.peak = max(self.server.peak, self.server.now)
        try:
            self._route(url.path, query)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self.server.lock:
                self.server.now -= 1

    def _route(self, path: str, query: dict[str, str]) -> None:
        if path == "/ok":
            self._answer(200, b'{"outcome": "success"}')
        elif path == "/slow":
            time.sleep(int(query.get("ms", "100")) / 1000)
            self._answer(200, b'{"outcome": "success"}')
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100000000")
            self.end_headers()
            for _ in range(600):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/huge":
            size = int(query.get("mb", "4")) << 20
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
        elif path == "/echo":  # a service that shows the caller what it sent
            body = orjson.dumps(dict(self.headers))
            self._answer(200, body, X_Seen_Auth=self.headers.get("Authorization", ""))
        elif path == "/redirect":
            self._answer(302, b"", Location="/redirect")
        elif path == "/garbage":
            self.wfile.write(b"\x00\x01 this is not HTTP at all\r\n\r\n")
            self.close_connection = True
        elif path == "/hangup":
            self.close_connection = True
        elif path == "/silent":
            while not self._client_gone(0.1):
                pass
            self.close_connection = True
        else:
            self._answer(404, b"{}")


class ServiceStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.keys: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.now = 0
        self.peak = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up mid-answer is what several tests are about


@contextlib.contextmanager
def service_stub() -> Iterator[ServiceStub]:
    server = ServiceStub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
