"""The demo buyer as benches and chaos use it: it honours idempotency keys and counts
duplicates, answers like a real buyer when asked to, and says what it saw at ``/stats``."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from engine.demo.buyer import BuyerServer
from engine.demo.buyer_realism import Realism
from engine.runtime.calls import AsyncCallRunner
from engine.steps.calls import Call, Delivery
from tests.waiting import wait_until

LEAD = b'{"email": "ada@example.com"}'


def post(url: str, key: str, header: str = "Idempotency-Key") -> httpx.Response:
    headers = {header: key, "Content-Type": "application/json"}
    return httpx.post(url, content=LEAD, headers=headers, timeout=10)


@pytest.fixture
def instant() -> Iterator[BuyerServer]:
    buyer = BuyerServer(port=0, mix=False, idempotency_header="X-Delivery")
    buyer.start_in_thread()
    yield buyer
    buyer.stop()


def test_a_delivery_posted_again_gets_the_first_answer_and_counts_as_a_duplicate(
    instant: BuyerServer,
) -> None:
    first = post(instant.url, "K1", "X-Delivery")
    again = post(instant.url, "K1", "X-Delivery")
    other = post(instant.url, "K2", "X-Delivery")
    assert first.json() == again.json() == other.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    stats = httpx.get(instant.stats_url, timeout=5).json()
    assert (stats["requests"], stats["unique_keys"], stats["duplicates"]) == (3, 2, 1)
    assert stats["duplicate_keys"] == ["/leads K1"]
    assert stats["in_flight"] == 0 and stats["peak_in_flight"] >= 1
    assert stats["latency_ms"]["p50"] is not None


def test_latency_follows_the_median_and_p99_asked_for() -> None:
    realism = Realism(median_ms=300, p99_ms=2000, seed=7)
    draws = sorted(realism.latency_s() * 1000 for _ in range(20_000))
    assert 270 < draws[10_000] < 330
    assert 1700 < draws[19_800] < 2300


def test_a_share_of_requests_is_never_answered_until_the_caller_gives_up() -> None:
    buyer = BuyerServer(port=0, mix=False, realism=Realism(timeout_fraction=0.5, seed=3))
    buyer.start_in_thread()
    runner = AsyncCallRunner()
    try:
        calls = [
            Call(Delivery(buyer.url, {"Idempotency-Key": f"K{i}"}, LEAD), 400, "Buyer")
            for i in range(20)
        ]
        answers = [runner.run(c) for c in calls]
        cut = [a for a in answers if a.error == "Buyer timeout after 400ms"]
        assert 0 < len(cut) < 20
        assert all(a.status == 200 for a in answers if a.error is None)
        stats = wait_until(
            lambda: buyer.stats.snapshot(),
            10,
            "every held request let go once its caller went",
            until=lambda s: s["in_flight"] == 0,
        )
        assert stats["never_answered"] == len(cut)
        assert stats["answered"] == 20 - len(cut)
    finally:
        runner.close()
        buyer.stop()


def test_it_runs_as_a_process_of_its_own_with_flags() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    args = ["--port", str(port), "--median-ms", "20", "--p99-ms", "80", "--no-mix"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.demo.buyer", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "buyer listening on" in proc.stdout.readline()
        assert post(f"http://127.0.0.1:{port}/leads", "K1").json()["outcome"] == "success"
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
        assert stats["requests"] == 1
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
