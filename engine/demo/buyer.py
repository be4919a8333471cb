"""A small local buyer: the external service a recipient step delivers to.

It decides from the lead itself, so a test can predict every answer:
an email containing ``+reject`` is refused as a duplicate, ``+error`` gets
HTTP 500, ``+flaky`` HTTP 503 on a delivery's first post and an acceptance on its retry,
``+slow`` answers after ``slow_seconds``, ``+lag`` after 300 ms; with ``mix`` on, other
leads are accepted or refused by a hash of the email (about 80/15/5 accept,
reject, error), which gives the demo a realistic spread.

Every answer but a 5xx is kept by idempotency key (the header a flow's step names,
``Idempotency-Key`` by default): a delivery posted again gets the first answer
back, marked ``Idempotent-Replayed: true``, and counts as a duplicate. A 5xx says the
post was not processed, so a retry is decided anew (as servers of the IETF
idempotency-key draft treat a request that failed before it ran). With a
``Realism`` the buyer answers like a real one (lognormal latency, a share never
answered); ``GET /stats`` says what it saw (``engine.demo.buyer_realism``).
Without one it answers at once, as it always has. Run it on its own with
``python -m engine.demo.buyer --port N [--median-ms 300 --p99-ms 2000
--timeout-fraction 0.05]`` (or ``leadflow buyer``).

``POST /ping`` answers an auction's ping with a bid (``bid``): a fixed price
(``--bid-price``), or one from the postal code, after ``--ping-ms``; or, with
``--bid-random-seed N``, a random price on every ping, a repeated one included (a real
buyer whose demand changes: an auction run twice is bid differently).

``POST /enhance/phone`` is a phone-check service for enhancement steps: it
answers the carrier and line type of the ``phone`` it is sent. Markers in any
value it is sent (the buyer ignores them) choose other answers: ``+unknown``
"Phone not found", ``+voip`` a VoIP line, ``+down`` HTTP 503, ``+hang`` an
answer after ``slow_seconds``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from engine.demo.buyer_realism import BuyerStats, Realism
from engine.errors import LeadflowError

STATS_PATH = "/stats"
# Answers remembered by idempotency key; past this many, new keys are answered afresh
# (the demo buyer's memory stays bounded on a long bench).
REMEMBERED_ANSWERS = 1_000_000


@dataclass(frozen=True)
class BuyerAnswer:
    status: int
    body: dict[str, Any]
    delay: float = 0.0


_UNAVAILABLE = BuyerAnswer(503, {"error": "service unavailable"})

# How long a ``+lag`` lead's answer takes: a real buyer's typical time.
LAG_SECONDS = 0.3


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
    if "+lag" in email:  # a buyer at real speed, within any sane deadline
        return BuyerAnswer(200, accepted.body, delay=LAG_SECONDS)
    if mix:
        roll = digest[0] % 100
        if roll >= 95:
            return BuyerAnswer(503, {"error": "service unavailable"})
        if roll >= 80:
            return BuyerAnswer(200, {"outcome": "failure", "reason": "Duplicate lead"})
    return accepted


CARRIERS = ("Verizon", "AT&T", "T-Mobile", "US Cellular")
PHONE_CHECK_PATH = "/enhance/phone"


def check_phone(request: dict[str, Any], slow_seconds: float = 10.0) -> BuyerAnswer:
    """The phone-check service's answer to one request (its fields as sent)."""
    marked = " ".join(str(v) for v in request.values())
    if "+unknown" in marked:
        return BuyerAnswer(200, {"outcome": "failure", "reason": "Phone not found"})
    if "+down" in marked:
        return BuyerAnswer(503, {"error": "service unavailable"})
    phone = str(request.get("phone", ""))
    digest = hashlib.sha256(phone.encode()).digest()
    found = {
        "outcome": "success",
        "carrier": CARRIERS[digest[0] % len(CARRIERS)],
        "line_type": "voip" if "+voip" in marked else ("mobile", "landline")[digest[1] % 2],
        "location": {"area_code": phone[:3]},
    }
    return BuyerAnswer(200, found, delay=slow_seconds if "+hang" in marked else 0.0)


PING_PATH = "/ping"


def bid(
    fields: dict[str, Any], price: float | None = None, salt: str = "", delay: float = 0.0
) -> BuyerAnswer:
    """A ping's answer, from the non-PII fields it carries: no bid outside the service
    area (state WY), else ``price`` if the buyer was given one, else a price from the
    postal code (and the buyer's ``salt``, so buyers of one auction bid apart), so a test
    can predict it. ``delay``: how long the buyer takes to bid."""
    if str(fields.get("state", "")).upper() == "WY":
        return BuyerAnswer(200, {"bid": False}, delay=delay)
    if price is not None:
        return BuyerAnswer(200, {"bid": price > 0, "price": price}, delay=delay)
    digest = hashlib.sha256((salt + str(fields.get("postal_code", ""))).encode()).digest()
    return BuyerAnswer(200, {"bid": True, "price": float(10 + digest[0] % 20)}, delay=delay)


class _Handler(BaseHTTPRequestHandler):
    server: BuyerServer
    # Keep-alive, like a real buyer's endpoint: recipients reuse their connections instead
    # of a handshake per lead (every answer has a Content-Length). TCP_NODELAY because the
    # headers and the body go out in two writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK of the headers, 40 ms on every call (measured: 300 calls
    # 13.5 s with keep-alive and Nagle, 0.94 s with HTTP/1.0, 0.28 s with both fixes).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _fields(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(raw.decode("utf-8", errors="replace")))
        try:
            data = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def _decide(self, fields: dict[str, Any]) -> tuple[BuyerAnswer, list[str]]:
        if self.path == PHONE_CHECK_PATH:
            return check_phone(fields, self.server.slow_seconds), self.server.enhanced
        if self.path == PING_PATH:
            server = self.server
            price = server.bid_price
            if server.bid_random is not None:
                with server.lock:  # one Random shared by the handler threads
                    price = round(server.bid_random.uniform(5.0, 50.0), 2)
            return bid(fields, price, server.bid_salt, server.ping_delay_s), server.pinged
        return decide(fields, self.server.mix, self.server.slow_seconds), self.server.received

    def _caller_gone(self, wait_s: float) -> bool:
        readable, _, _ = select.select([self.connection], [], [], wait_s)
        if not readable:
            return False
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True

    def _hold(self) -> None:
        """Never answer: keep the request open until the caller gives up (or ``hold_s``)."""
        realism = self.server.realism
        until = time.monotonic() + (realism.hold_s if realism else 0.0)
        while time.monotonic() < until and not self._caller_gone(0.1):
            pass
        self.close_connection = True

    def do_POST(self) -> None:
        fields = self._fields()
        key = self.headers.get(self.server.idempotency_header, "")
        arrived = time.perf_counter()
        replayed = self.server.stats.arrived(f"{self.path} {key}" if key else "")
        latency_ms: float | None = None
        try:
            answer, calls = self._decide(fields)
            with self.server.lock:
                calls.append(key)
                self.server.bodies.append(fields)
                if "+flaky" in str(fields.get("email", "")) and self.path != PING_PATH:
                    # Down for a delivery's first post (by its key), up for its retry.
                    first = (self.path, key) not in self.server.flaky_seen
                    if len(self.server.flaky_seen) > REMEMBERED_ANSWERS:
                        self.server.flaky_seen.clear()
                    self.server.flaky_seen.add((self.path, key))
                    answer = _UNAVAILABLE if first else answer
                if (
                    key
                    and answer.status < 500
                    and not (self.path == PING_PATH and self.server.bid_random)
                ):
                    # Honour the key: the same delivery gets the same answer, every time
                    # (but a buyer bidding at random prices every ping anew, even a repeat).
                    kept = self.server.answered.setdefault((self.path, key), answer)
                    answer = kept
                    if len(self.server.answered) > REMEMBERED_ANSWERS:
                        self.server.answered.pop((self.path, key))
            realism = self.server.realism
            if realism is not None and realism.never_answers():
                self._hold()
                return
            delay = answer.delay + self.server.latency_s
            delay += realism.latency_s() if realism is not None else 0.0
            if delay:
                time.sleep(delay)
            extra = {"Idempotent-Replayed": "true"} if replayed else {}
            if self._send(answer.status, answer.body, extra):
                latency_ms = (time.perf_counter() - arrived) * 1000
        finally:
            self.server.stats.left(latency_ms)

    def do_GET(self) -> None:
        if self.path != STATS_PATH:
            self._send(404, {"error": "not found"})
            return
        self._send(200, self.server.stats.snapshot())

    def _send(
        self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None
    ) -> bool:
        body = json.dumps(data).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return False  # a slow answer the caller stopped waiting for: what ``+slow`` is for
        return True

    def log_message(self, format: str, *args: Any) -> None:
        return


class BuyerPortError(LeadflowError):
    """The buyer cannot listen on its port (most often: another process holds it)."""


class BuyerServer(ThreadingHTTPServer):
    daemon_threads = True
    # A step keeps hundreds of calls in flight: socketserver's backlog of 5 refused the
    # connections beyond it (resets, and SYN retries that looked like 3 s buyer timeouts).
    request_queue_size = 1024

    def __init__(
        self,
        port: int = 8765,
        mix: bool = True,
        slow_seconds: float = 10.0,
        latency_s: float = 0.0,
        realism: Realism | None = None,
        idempotency_header: str = "Idempotency-Key",
        bid_price: float | None = None,
        bid_salt: str = "",
        ping_delay_s: float = 0.0,
        bid_random_seed: int | None = None,
    ) -> None:
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError as exc:  # a busy port is an operator's situation, not a traceback
            raise BuyerPortError(
                f"the demo buyer cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
                " (another port: leadflow buyer --port N)"
            ) from None
        self.mix = mix
        self.slow_seconds = slow_seconds
        # Added to every answer: a buyer that takes its time, like real ones.
        self.latency_s = latency_s
        self.realism = realism if realism is not None and not realism.instant else None
        self.idempotency_header = idempotency_header
        # How this buyer bids on pings (``bid``): a fixed price (0: never bids), or one
        # from the lead's postal code and this salt; and how long it takes to answer one.
        self.bid_price = bid_price
        self.bid_salt = bid_salt
        self.ping_delay_s = ping_delay_s
        # Set (a seed): every ping, even one repeated under its key, gets a fresh random
        # price, as a real buyer's changing demand would: a re-run auction is bid anew.
        self.bid_random = random.Random(bid_random_seed) if bid_random_seed is not None else None
        self.stats = BuyerStats()
        self.answered: dict[tuple[str, str], BuyerAnswer] = {}
        # The deliveries of ``+flaky`` leads posted once already (their retry is accepted).
        self.flaky_seen: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        # Idempotency keys of the calls received, leads and phone checks apart.
        self.received: list[str] = []
        self.enhanced: list[str] = []
        self.pinged: list[str] = []
        # The fields of the last lead calls, as the buyer read them (what a flow's sealed
        # fields look like on arrival: clear).
        self.bodies: deque[dict[str, Any]] = deque(maxlen=1000)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/leads"

    @property
    def ping_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PING_PATH}"

    @property
    def phone_check_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PHONE_CHECK_PATH}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{STATS_PATH}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="buyer", daemon=True)
        thread.start()
        return thread


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m engine.demo.buyer``: the buyer in a process of its own (benches, chaos)."""
    parser = argparse.ArgumentParser(prog="python -m engine.demo.buyer", description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--mix", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--median-ms", type=float, default=0.0, help="Answer latency median.")
    parser.add_argument("--p99-ms", type=float, default=0.0, help="Answer latency p99.")
    parser.add_argument(
        "--timeout-fraction", type=float, default=0.0, help="Share of requests never answered."
    )
    parser.add_argument("--hold-s", type=float, default=600.0, help="Longest hold of those.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--idempotency-header", default="Idempotency-Key")
    parser.add_argument("--bid-price", type=float, default=None, help="Fixed ping bid (0: no bid).")
    parser.add_argument("--bid-salt", default="", help="Varies the postal-code bid per buyer.")
    parser.add_argument("--ping-ms", type=float, default=0.0, help="Added to each ping answer.")
    parser.add_argument(
        "--bid-random-seed",
        type=int,
        default=None,
        help="Bid a random price on every ping, a repeated one too (seeded).",
    )
    args = parser.parse_args(argv)
    realism = Realism(args.median_ms, args.p99_ms, args.timeout_fraction, args.hold_s, args.seed)
    server = BuyerServer(
        args.port,
        mix=args.mix,
        realism=realism,
        idempotency_header=args.idempotency_header,
        bid_price=args.bid_price,
        bid_salt=args.bid_salt,
        ping_delay_s=args.ping_ms / 1000,
        bid_random_seed=args.bid_random_seed,
    )
    print(f"buyer listening on {server.url} (stats: {server.stats_url})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
