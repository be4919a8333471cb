"""Fixtures for the HTTP intake: a flow whose source takes HTTP leads, its workers, a real server.

The server is uvicorn on a free port in a thread (the production ASGI server,
one worker); the flow is applied to the registry, as an operator would, and
its steps run as transactional loops in threads (tests.kafka_helpers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from engine.api.app import create_app
from engine.demo.buyer import BuyerServer
from engine.flows import Flow
from engine.runtime.registry import apply_flow, delete_flow
from engine.settings import Settings
from tests.factories import make_flow
from tests.kafka_helpers import run_steps
from tests.waiting import wait_until

KEY_ENV = "LEADFLOW_TEST_INTAKE_KEY"
API_KEY = "test-key-1d8a0c"
GOOD_LEAD = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone_1": "5125550123",
    "state": "CA",
    "tcpa_consent": "yes",
}


def intake_flow(flow_id: str, buyer_url: str, **intake: Any) -> Flow:
    """tests/flows/basic.yaml whose source takes JSON, form and XML leads over HTTP,
    and whose buyer answers pings."""
    definition = make_flow(flow_id, buyer_url).model_dump(mode="json")
    definition["destinations"] = []
    definition["steps"][2]["settings"]["ping_url"] = buyer_url.replace("/leads", "/ping")
    definition["steps"][0]["settings"]["intake"] = {
        "auth": {"key_env": KEY_ENV},
        "formats": ["json", "form", "xml"],
        **intake,
    }
    return Flow.model_validate(definition)


@pytest.fixture
def api_settings(stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    return stack.model_copy(update={"db_schema": unique_id})


@pytest.fixture
def api_url(api_settings: Settings) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(api_settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "the API server to start", every=0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


AppliedFlow = Callable[..., Flow]


@pytest.fixture
def applied_flow(
    api_settings: Settings, unique_id: str, buyer: BuyerServer
) -> Iterator[AppliedFlow]:
    """``applied_flow(workers=True, **intake)``: the intake flow, applied, its steps running."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    applied: list[str] = []

    def make(suffix: str = "", workers: bool = True, **intake: Any) -> Flow:
        flow = intake_flow(f"{unique_id}{suffix}", buyer.url, **intake)
        apply_flow(api_settings, flow)
        applied.append(flow.id)
        if workers:
            threads.extend(run_steps(api_settings, flow, stop))
        return flow

    yield make
    stop.set()
    for thread in threads:
        thread.join(30)
    for flow_id in applied:
        delete_flow(api_settings, flow_id)


def start_workers(settings: Settings, flow: Flow) -> threading.Event:
    stop = threading.Event()
    run_steps(settings, flow, stop)
    return stop
