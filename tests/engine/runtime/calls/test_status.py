"""What ``leadflow calls status`` and the UI show, read from a real exposition: a breaker a
real runner opened against a failing local service, counts, latency from the buckets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.runtime.calls import AsyncCallRunner
from engine.runtime.calls.breaker import Breakers
from engine.runtime.calls.status import fetch_status, metrics_urls, read_status
from engine.runtime.kafka.metrics import serve_metrics
from engine.settings import Settings
from engine.steps.calls import Call, Delivery
from tests.engine.runtime.calls.service_stub import ServiceStub, service_stub


def call(url: str) -> Call:
    return Call(Delivery(url, {}, b"{}"), 2000, "Buyer")


@pytest.fixture
def stub() -> Iterator[ServiceStub]:
    with service_stub() as server:
        yield server


@pytest.fixture
def metrics_url() -> Iterator[str]:
    server, _ = serve_metrics(0)
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/metrics"


def test_an_open_breaker_and_its_failures_are_read_from_the_exposition(
    stub: ServiceStub, metrics_url: str
) -> None:
    destination = call(stub.url("/ok")).destination
    before = {r.destination: r for r in fetch_status([metrics_url])[0].destinations}
    base = before.get(destination)
    runner = AsyncCallRunner(breakers=Breakers(failures=3, cool_down_ms=60_000))
    try:
        runner.run(call(stub.url("/ok")))
        for _ in range(3):
            runner.run(call(stub.url("/hangup")))
        runner.run(call(stub.url("/ok")))  # refused: open
        [source] = fetch_status([metrics_url])
    finally:
        runner.close()
    assert source.error is None
    [row] = [r for r in source.destinations if r.destination == destination]
    assert row.breaker == ["open"]
    assert row.in_flight == 0
    assert row.answered - (base.answered if base else 0) == 1
    assert row.failed - (base.failed if base else 0) == 3
    assert row.refused - (base.refused if base else 0) == 1
    assert row.p50_ms is not None and row.p95_ms is not None
    assert "/ok" not in row.destination  # scheme, host and port only


EXPOSITION = """\
# TYPE leadflow_call_seconds histogram
leadflow_call_seconds_bucket{destination="http://b:80",outcome="answered",le="0.1"} 0.0
leadflow_call_seconds_bucket{destination="http://b:80",outcome="answered",le="0.25"} 6.0
leadflow_call_seconds_bucket{destination="http://b:80",outcome="answered",le="0.5"} 16.0
leadflow_call_seconds_bucket{destination="http://b:80",outcome="answered",le="+Inf"} 16.0
leadflow_call_seconds_count{destination="http://b:80",outcome="answered"} 16.0
leadflow_call_seconds_sum{destination="http://b:80",outcome="answered"} 4.0
leadflow_call_seconds_bucket{destination="http://b:80",outcome="failed",le="0.1"} 0.0
leadflow_call_seconds_bucket{destination="http://b:80",outcome="failed",le="0.25"} 4.0
leadflow_call_seconds_bucket{destination="http://b:80",outcome="failed",le="0.5"} 4.0
leadflow_call_seconds_bucket{destination="http://b:80",outcome="failed",le="+Inf"} 4.0
leadflow_call_seconds_count{destination="http://b:80",outcome="failed"} 4.0
leadflow_call_seconds_sum{destination="http://b:80",outcome="failed"} 0.8
# TYPE leadflow_call_breaker_state gauge
leadflow_call_breaker_state{destination="http://b:80",state="open"} 1.0
leadflow_call_breaker_state{destination="http://b:80",state="closed"} 1.0
leadflow_call_breaker_state{destination="http://b:80",state="half_open"} 0.0
# TYPE leadflow_calls_in_flight gauge
leadflow_calls_in_flight{destination="http://b:80"} 7.0
leadflow_calls_in_flight{destination="http://a:80"} 0.0
"""


def test_latency_is_interpolated_in_its_bucket_and_mixed_breakers_are_all_shown() -> None:
    a, b = read_status(EXPOSITION)
    assert (a.destination, a.breaker, a.p50_ms) == ("http://a:80", [], None)
    assert b.breaker == ["closed", "open"]  # one process saw the failures, another not yet
    assert (b.in_flight, b.answered, b.failed, b.refused) == (7, 16, 4, 0)
    # 20 calls: 10 by 0.25 s; the 10th is the last of the (0.1, 0.25] bucket, the 19th is
    # 9/10 of the way through (0.25, 0.5].
    assert (b.p50_ms, b.p95_ms) == (250.0, 475.0)


def test_a_host_that_does_not_answer_is_a_row_not_a_failure(metrics_url: str) -> None:
    down = closed_port_url()
    first, second = fetch_status([down, metrics_url])
    assert first.url == down and first.error == "not readable (ConnectError)"
    assert second.error is None


def test_the_urls_come_from_the_setting_or_the_run_port() -> None:
    assert metrics_urls(Settings(calls_metrics_urls=" http://a/m , http://b/m")) == [
        "http://a/m",
        "http://b/m",
    ]
    assert metrics_urls(Settings(metrics_port=9464)) == ["http://127.0.0.1:9464/metrics"]
    assert metrics_urls(Settings(metrics_port=0)) == []


def test_the_command_prints_json_a_table_and_says_when_nothing_answers(
    stub: ServiceStub, metrics_url: str
) -> None:
    runner = AsyncCallRunner()
    try:
        runner.run(call(stub.url("/ok")))
    finally:
        runner.close()
    cli = CliRunner()
    as_json = cli.invoke(app, ["calls", "status", "--url", metrics_url, "--json"])
    assert as_json.exit_code == 0, as_json.output
    [source] = orjson.loads(as_json.stdout)
    assert call(stub.url("/ok")).destination in {d["destination"] for d in source["destinations"]}
    table = cli.invoke(app, ["calls", "status", "--url", metrics_url])
    assert table.exit_code == 0 and "destination" in table.stdout
    down = cli.invoke(app, ["calls", "status", "--url", closed_port_url()])
    assert down.exit_code == 1 and "not readable" in down.stdout
    nothing = cli.invoke(app, ["calls", "status"], env={"LEADFLOW_METRICS_PORT": "0"})
    assert nothing.exit_code == 2 and "No metrics to read" in nothing.output
