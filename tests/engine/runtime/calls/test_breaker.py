"""A destination's circuit breaker, against a real local service: it opens after failures
in a row, fails fast while open, lets one probe through after the cool-down."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from engine.runtime.calls import AsyncCallRunner
from engine.runtime.calls.breaker import Breakers
from engine.runtime.kafka.metrics import REGISTRY
from engine.steps.calls import Call, Delivery
from tests.engine.runtime.calls.service_stub import ServiceStub, service_stub
from tests.waiting import wait_until


def call(url: str) -> Call:
    return Call(Delivery(url, {}, b"{}"), 2000, "Buyer")


@pytest.fixture
def stub() -> Iterator[ServiceStub]:
    with service_stub() as server:
        yield server


@pytest.fixture
def runner() -> Iterator[AsyncCallRunner]:
    made = AsyncCallRunner(breakers=Breakers(failures=3, cool_down_ms=300))
    yield made
    made.close()


def test_the_breaker_opens_after_failures_in_a_row_and_a_probe_closes_it(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    for _ in range(3):
        assert runner.run(call(stub.url("/hangup"))).error is not None
    destination = call(stub.url("/ok")).destination
    assert runner.breaker_states() == {destination: "open"}
    fast = runner.run(call(stub.url("/ok")))
    assert fast.error == "Buyer circuit open: 3 calls failed in a row"
    assert fast.breaker_state == "open"
    assert stub.requests == 3  # failed fast: the service never saw it
    time.sleep(0.35)
    assert runner.breaker_states() == {destination: "half_open"}
    probe = runner.run(call(stub.url("/ok")))
    assert (probe.status, probe.breaker_state) == (200, "closed")
    assert runner.breaker_states() == {destination: "closed"}


def test_a_failed_probe_opens_the_breaker_again(stub: ServiceStub, runner: AsyncCallRunner) -> None:
    for _ in range(3):
        runner.run(call(stub.url("/hangup")))
    time.sleep(0.35)
    assert runner.run(call(stub.url("/hangup"))).error is not None  # the probe fails
    assert runner.run(call(stub.url("/ok"))).error is not None  # open again: fast
    assert stub.requests == 4


def test_an_answer_between_failures_keeps_it_closed(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    for path in ("/hangup", "/hangup", "/ok", "/hangup", "/hangup"):
        runner.run(call(stub.url(path)))
    assert runner.run(call(stub.url("/ok"))).status == 200


def test_calls_in_flight_and_their_latency_are_metrics_per_destination(
    stub: ServiceStub, runner: AsyncCallRunner
) -> None:
    runner.run(call(stub.url("/ok")))
    port = stub.server_address[1]
    text = generate_latest(REGISTRY).decode()
    label = f'destination="http://127.0.0.1:{port}"'
    assert f"leadflow_calls_in_flight{{{label}}} 0.0" in text
    assert f'leadflow_call_seconds_count{{{label},outcome="answered"}} 1.0' in text
    wait_until(runner.in_flight, 5, "the call's count to end", until=lambda n: n == 0)


def test_without_breakers_failures_never_stop_calls(stub: ServiceStub) -> None:
    plain = AsyncCallRunner()
    try:
        for _ in range(6):
            plain.run(call(stub.url("/hangup")))
        answer = plain.run(call(stub.url("/ok")))
        assert (answer.status, answer.breaker_state) == (200, None)
        assert plain.breaker_states() == {}
    finally:
        plain.close()
