"""The demo buyer behaves like a real buyer's endpoint: one connection serves many calls."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import BinaryIO

import httpx
import pytest

from engine.demo.buyer import PHONE_CHECK_PATH, BuyerServer, bid


@pytest.fixture
def server() -> Iterator[BuyerServer]:
    buyer = BuyerServer(port=0, mix=False)
    buyer.start_in_thread()
    yield buyer
    buyer.stop()


def _request(body: bytes, port: int) -> bytes:
    return (
        f"POST {PHONE_CHECK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _read_response(reader: BinaryIO) -> dict[str, object]:
    status = reader.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    answer: dict[str, object] = json.loads(reader.read(length))
    return answer


def test_two_calls_on_one_connection_get_two_answers(server: BuyerServer) -> None:
    port = int(server.url.rsplit(":", 1)[1].split("/", 1)[0])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        sock.makefile("rb") as reader,
    ):
        for phone in ("5125550100", "5125550101"):
            sock.sendall(_request(json.dumps({"phone": phone}).encode(), port))
            assert _read_response(reader)["outcome"] == "success"


def test_a_ping_gets_the_buyers_own_bid() -> None:
    fields = {"state": "TX", "postal_code": "78701"}
    assert bid(fields, price=42.0).body == {"bid": True, "price": 42.0}
    assert bid(fields, price=0.0).body == {"bid": False, "price": 0.0}  # never bids
    assert bid({**fields, "state": "WY"}, price=42.0).body == {"bid": False}
    assert bid(fields, delay=0.2).delay == 0.2
    # Without a price: from the postal code, salted per buyer, the same every time.
    assert bid(fields, salt="a").body == bid(fields, salt="a").body
    prices = {bid(fields, salt=s).body["price"] for s in ("a", "b", "c", "d", "e")}
    assert len(prices) > 1


def test_a_randomly_bidding_buyer_prices_every_ping_anew_even_under_one_key() -> None:
    buyer = BuyerServer(port=0, mix=False, bid_random_seed=7)
    buyer.start_in_thread()
    try:
        port = int(buyer.ping_url.rsplit(":", 1)[1].split("/", 1)[0])
        body = json.dumps({"state": "TX", "postal_code": "78701"}).encode()
        prices = []
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            sock.makefile("rb") as reader,
        ):
            for _ in range(5):
                request = _request(body, port).replace(PHONE_CHECK_PATH.encode(), b"/ping", 1)
                sock.sendall(request.replace(b"\r\n\r\n", b"\r\nIdempotency-Key: k1\r\n\r\n", 1))
                answer = _read_response(reader)
                assert answer["bid"] is True
                prices.append(answer["price"])
        assert len(set(prices)) > 1, prices  # the same key, another price
        assert all(isinstance(p, float) and 5.0 <= p <= 50.0 for p in prices), prices
        assert buyer.pinged == ["k1"] * 5
    finally:
        buyer.stop()


def _post(server: BuyerServer, body: dict[str, object], key: str) -> tuple[int, str | None]:
    """The lead posted under idempotency key ``key``: the status, and the replay header."""
    answer = httpx.post(server.url, json=body, headers={"Idempotency-Key": key}, timeout=5)
    return answer.status_code, answer.headers.get("Idempotent-Replayed")


def test_a_flaky_delivery_is_refused_once_then_accepted_on_its_retry(server: BuyerServer) -> None:
    flaky = {"email": "ada+flaky@example.com"}
    assert _post(server, flaky, "d1")[0] == 503
    assert _post(server, flaky, "d1") == (200, "true")  # the retry: processed now
    assert _post(server, flaky, "d1") == (200, "true")  # and kept, as any answer but a 5xx
    assert _post(server, flaky, "d2")[0] == 503  # another delivery of it: down again


def test_a_server_error_is_not_kept_for_the_key_an_answer_is(server: BuyerServer) -> None:
    assert _post(server, {"email": "bo+error@example.com"}, "e1")[0] == 500
    assert _post(server, {"email": "bo+error@example.com"}, "e1")[0] == 500
    assert ("/leads", "e1") not in server.answered
    assert _post(server, {"email": "cy+reject@example.com"}, "r1")[0] == 200
    assert ("/leads", "r1") in server.answered
