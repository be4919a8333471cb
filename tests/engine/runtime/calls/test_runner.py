"""The call runner against a real local service: many calls at once within their bounds,
deadlines that hold, and every failure an error answer, handed back once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from engine.runtime.calls import AsyncCallRunner, CallLimits
from engine.runtime.calls.runner import RunnerClosedError
from engine.steps.calls import Answer, Call, Delivery
from tests.engine.runtime.calls.service_stub import ServiceStub, service_stub
from tests.waiting import wait_until


def call(url: str, timeout_ms: int = 2000, limit: int | None = None, key: str = "K1") -> Call:
    delivery = Delivery(url, {"Idempotency-Key": key}, b"{}")
    return Call(delivery, timeout_ms, "Buyer", limit)


@pytest.fixture
def stub() -> Iterator[ServiceStub]:
    with service_stub() as server:
        yield server


@pytest.fixture
def runner() -> Iterator[AsyncCallRunner]:
    made = AsyncCallRunner(max_in_flight=8, limits=CallLimits(max_response_bytes=64 * 1024))
    yield made
    made.close()


class Collected:
    """``done`` for ``start``: the answers of each call, and on which thread they came."""

    def __init__(self) -> None:
        self.answers: list[list[Answer]] = []
        self.threads: list[str] = []
        self.event = threading.Event()

    def __call__(self, answers: list[Answer]) -> None:
        self.answers.append(answers)
        self.threads.append(threading.current_thread().name)
        self.event.set()

    def wait(self) -> list[Answer]:
        assert self.event.wait(20), "done was never called"
        return self.answers[0]


def test_calls_are_made_at_once_and_answered_in_their_order(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    done = Collected()
    calls = [call(stub.url(f"/slow?ms={300 - 20 * i}"), key=f"K{i}") for i in range(6)]
    runner.start(calls, done)
    answers = done.wait()
    assert [a.status for a in answers] == [200] * 6
    assert sorted(stub.keys) == sorted(f"K{i}" for i in range(6))
    assert stub.peak > 1  # they were on the wire together
    assert done.threads == ["calls"]  # from the runner's thread
    assert all(a.wait_ms >= 100 for a in answers)
    wait_until(runner.in_flight, 5, "no call left in flight", until=lambda n: n == 0)


def test_the_process_bound_holds(stub: ServiceStub) -> None:
    bounded = AsyncCallRunner(max_in_flight=3)
    try:
        groups = [Collected() for _ in range(4)]
        for i, done in enumerate(groups):
            bounded.start([call(stub.url("/slow?ms=150"), key=f"{i}-{j}") for j in range(3)], done)
        assert all(len(d.wait()) == 3 for d in groups)
        assert 1 < stub.peak <= 3
        assert stub.requests == 12
    finally:
        bounded.close()


def test_a_destinations_own_limit_holds(stub: ServiceStub, runner: AsyncCallRunner) -> None:
    done = Collected()
    runner.start([call(stub.url("/slow?ms=100"), limit=2, key=f"K{i}") for i in range(6)], done)
    assert [a.status for a in done.wait()] == [200] * 6
    assert stub.peak == 2


def test_waiting_for_a_slot_is_not_the_services_wait(stub: ServiceStub) -> None:
    one = AsyncCallRunner(max_in_flight=1)
    try:
        done = Collected()
        one.start([call(stub.url("/slow?ms=1000")), call(stub.url("/ok"), key="K2")], done)
        slow, quick = done.wait()
        # The second call waited a second for its slot, behind the first: the engine's
        # wait, not the service's, which answered it at once.
        assert slow.wait_ms >= 1000
        assert quick.status == 200 and quick.wait_ms < 500
        assert quick.sent_at_ms >= slow.sent_at_ms + 1000 - 50
    finally:
        one.close()


def test_run_blocks_for_one_answer(stub: ServiceStub, runner: AsyncCallRunner) -> None:
    answer = runner.run(call(stub.url("/ok")))
    assert (answer.status, answer.error, answer.body) == (200, None, b'{"outcome": "success"}')
    assert answer.headers == {"content-type": "application/json"}
    assert answer.received_at_ms >= answer.sent_at_ms > 0


def test_a_window_cuts_the_calls_not_answered_in_time(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    done = Collected()
    runner.start([call(stub.url("/ok")), call(stub.url("/silent"))], done, window_ms=300)
    fast, cut = done.wait()
    assert fast.status == 200 and not fast.cut
    assert cut.status is None and cut.cut  # the window ended it, not the service
    assert cut.error == "Buyer no answer within the 300ms window"
    assert cut.wait_ms >= 250  # it was waiting on the service all that time
    assert len(done.answers) == 1


def test_a_trickling_service_is_cut_at_the_deadline(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    answer = runner.run(call(stub.url("/trickle"), timeout_ms=600))
    assert answer.error == "Buyer timeout after 600ms"
    # httpx's per-read timeout alone would wait for ever: a byte comes every 100 ms.
    assert 550 <= answer.wait_ms < 5000


def test_a_silent_service_times_out_and_its_wait_is_counted(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    answer = runner.run(call(stub.url("/silent"), timeout_ms=300))
    assert answer.error == "Buyer timeout after 300ms"
    assert answer.wait_ms >= 280


def test_a_huge_answer_is_cut_at_the_limit(stub: ServiceStub, runner: AsyncCallRunner) -> None:
    answer = runner.run(call(stub.url("/huge?mb=64"), timeout_ms=10_000))
    assert answer.error == "Buyer answer too large: over 65536 bytes"
    assert answer.body == b""


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/garbage", "Buyer answered garbage: not HTTP"),
        ("/hangup", "Buyer closed the connection without an answer"),
    ],
)
def test_what_is_not_an_answer_is_an_error_answer(
    stub: ServiceStub, runner: AsyncCallRunner, path: str, reason: str
) -> None:
    assert runner.run(call(stub.url(path))).error == reason


def test_a_redirect_is_not_followed(stub: ServiceStub, runner: AsyncCallRunner) -> None:
    answer = runner.run(call(stub.url("/redirect")))
    assert answer.status == 302
    assert stub.requests == 1


def test_a_refused_connection_is_an_error_answer(runner: AsyncCallRunner) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    answer = runner.run(call(f"http://127.0.0.1:{port}/leads"))
    assert answer.error == "Buyer unreachable: connection refused"


def test_a_tls_handshake_with_a_plain_server_is_an_error_answer(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    answer = runner.run(call(stub.url("/ok").replace("http://", "https://")))
    assert answer.error == "Buyer unreachable: TLS handshake failed"


def test_a_name_that_does_not_resolve_is_an_error_answer(runner: AsyncCallRunner) -> None:
    answer = runner.run(call("http://buyer.invalid/leads"))
    assert answer.error == "Buyer unreachable: DNS lookup failed"


def test_a_done_that_raises_does_not_stop_the_runner(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    def broken(answers: list[Answer]) -> None:
        raise RuntimeError("the caller's bug")

    runner.start([call(stub.url("/ok"))], broken)
    assert runner.run(call(stub.url("/ok"))).status == 200


def test_no_calls_are_answered_at_once(runner: AsyncCallRunner) -> None:
    done = Collected()
    runner.start([], done)
    assert done.wait() == []


def test_close_cancels_what_is_in_flight_without_answering_it(stub: ServiceStub) -> None:
    closing = AsyncCallRunner()
    done = Collected()
    closing.start([call(stub.url("/silent"), timeout_ms=30_000)], done)
    wait_until(lambda: stub.requests, 5, "the call to reach the service")
    closing.close()
    closing.close()  # idempotent
    assert done.answers == []
    assert closing.in_flight() == 0
    with pytest.raises(RunnerClosedError):
        closing.start([call(stub.url("/ok"))], done)


def test_a_call_group_that_fails_inside_the_runner_is_still_answered(
    stub: ServiceStub, runner: AsyncCallRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(calls: list[Call], window_ms: int | None) -> list[Answer]:
        raise RuntimeError("a runner bug")

    monkeypatch.setattr(runner, "_counted", broken)
    got = Collected()
    runner.start([call(stub.url("/ok"))], got)
    (answer,) = got.wait()  # never silence: the lane behind this call would wait for ever
    assert answer.status is None and answer.error == "Buyer call failed: RuntimeError"
