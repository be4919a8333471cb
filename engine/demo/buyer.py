"""A small local buyer: the external service a recipient step delivers to.

It decides from the lead itself, so a test can predict every answer:
an email containing ``+reject`` is refused as a duplicate, ``+error`` gets
HTTP 500, ``+slow`` answers after ``slow_seconds``; with ``mix`` on, other
leads are accepted or refused by a hash of the email (about 80/15/5 accept,
reject, error), which gives the demo a realistic spread.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class BuyerAnswer:
    status: int
    body: dict[str, Any]
    delay: float = 0.0


def decide(lead: dict[str, Any], mix: bool, slow_seconds: float = 10.0) -> BuyerAnswer:
    email = str(lead.get("email", ""))
    digest = hashlib.sha256(email.encode()).digest()
    price = 15 + digest[1] % 31
    accepted = BuyerAnswer(
        200, {"outcome": "success", "id": "B-" + digest[:5].hex(), "price": price}
    )
    if "+reject" in email:
        return BuyerAnswer(200, {"outcome": "failure", "reason": "Duplicate lead"})
    if "+error" in email:
        return BuyerAnswer(500, {"error": "internal error"})
    if "+slow" in email:
        return BuyerAnswer(200, accepted.body, delay=slow_seconds)
    if mix:
        roll = digest[0] % 100
        if roll >= 95:
            return BuyerAnswer(503, {"error": "service unavailable"})
        if roll >= 80:
            return BuyerAnswer(200, {"outcome": "failure", "reason": "Duplicate lead"})
    return accepted


class _Handler(BaseHTTPRequestHandler):
    server: BuyerServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            lead = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            lead = {}
        answer = decide(
            lead if isinstance(lead, dict) else {}, self.server.mix, self.server.slow_seconds
        )
        with self.server.lock:
            self.server.received.append(self.headers.get("Idempotency-Key", ""))
        if answer.delay:
            time.sleep(answer.delay)
        body = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class BuyerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 8765, mix: bool = True, slow_seconds: float = 10.0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.mix = mix
        self.slow_seconds = slow_seconds
        self.lock = threading.Lock()
        self.received: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/leads"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="buyer", daemon=True)
        thread.start()
        return thread
