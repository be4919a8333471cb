"""A lead's client_ip through the HTTP intake: X-Forwarded-For believed from trusted proxies
only (``LEADFLOW_TRUSTED_PROXIES``), on both of the source's events."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import uvicorn

from engine.api.app import create_app
from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, KEY_ENV, AppliedFlow
from tests.engine.api.test_intake_submit import submit
from tests.kafka_helpers import events_by_lead, read_events, wait_for_completion
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


@pytest.fixture
def api_settings(stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The test client connects from 127.0.0.1: the only proxy this API trusts.
    monkeypatch.setenv(KEY_ENV, API_KEY)
    return stack.model_copy(update={"db_schema": unique_id, "trusted_proxies": ("127.0.0.1/32",)})


@pytest.fixture
def api_url(api_settings: Settings) -> Iterator[str]:
    """The API as ``leadflow serve`` runs it: uvicorn's own proxy-header handling off."""
    config = uvicorn.Config(
        create_app(api_settings), host="127.0.0.1", port=0, log_level="warning", proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "the API server to start", every=0.05)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(15)


def test_the_client_behind_a_trusted_proxy_is_recorded_not_a_forged_hop(
    api_url: str, api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow()
    forged = "1.1.1.1, 203.0.113.7"  # the client wrote 1.1.1.1 itself
    lead_id = submit(api_url, flow.id, GOOD_LEAD, **{"X-Forwarded-For": forged}).json()["lead"][
        "id"
    ]
    direct = submit(api_url, flow.id, {**GOOD_LEAD, "email": "b@example.com"}).json()["lead"]["id"]
    wait_for_completion(api_settings, flow, 2)
    leads = events_by_lead(read_events(api_settings, flow))
    assert {e["client_ip"] for e in leads[lead_id][:2]} == {"203.0.113.7"}
    assert {e["client_ip"] for e in leads[direct][:2]} == {"127.0.0.1"}
