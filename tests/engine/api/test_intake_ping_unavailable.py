"""A ping while Postgres or Kafka is unavailable is a 503 the source can retry, as a submit is."""

from __future__ import annotations

from typing import Any

import pytest

from engine.api.app import create_app
from engine.api.intake_store import IntakeStoreError
from engine.settings import Settings
from tests.engine.api.conftest import API_KEY, GOOD_LEAD, AppliedFlow
from tests.keys import admin_client

pytestmark = pytest.mark.stack


def test_a_ping_the_intake_store_cannot_record_is_a_503_not_a_500(
    api_settings: Settings, applied_flow: AppliedFlow
) -> None:
    flow = applied_flow(ping={"fields": ["state", "postal_code"]})
    url = f"/flows/{flow.id}/sources/source/ping"
    app = create_app(api_settings)
    with admin_client(app) as client:
        assert client.post(url, json=GOOD_LEAD, headers={"X-API-Key": API_KEY}).status_code == 200

        async def store_down(*args: Any) -> None:
            raise IntakeStoreError("intake store unavailable: OperationalError")

        app.state.intake.store.add_ping = store_down
        answer = client.post(url, json=GOOD_LEAD, headers={"X-API-Key": API_KEY})
    assert answer.status_code == 503
    assert answer.json() == {
        "outcome": "error",
        "reason": "Ping not taken: intake store unavailable: OperationalError",
        "error": "unavailable",
    }
