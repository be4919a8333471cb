"""A seeded API for the security suite: two flows' leads with clear-text PII, and stored keys
of every kind (``leadflow keys``' model), made once per module.

Flow ``A`` has a lead delivered to buyer ``premier`` today (inside the return window)
and one delivered to ``premier`` 400 days ago; flow ``B`` has a lead whose data must
never reach a key restricted to ``A``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.access.store import create_key, revoke_key
from engine.api.app import create_app
from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.generations import migrate_database
from projectors.store import connect
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.conftest import _drop_schemas_of

# The intake API's fixtures (an API server, an applied flow with HTTP intake), for
# test_intake_keys.py: imported here so pytest offers them in this folder.
from tests.engine.api.conftest import api_settings, api_url, applied_flow  # noqa: F401
from tests.factories import make_lead_events
from tests.projectors.test_search import wait_visible

# The seeded lead's clear text: no answer to a key without pii:read may hold any of it.
PII = {
    "lead.email": "grace.hopper@navy.example",
    "lead.phone_1": "2025550199",
    "lead.first_name": "Grace",
    "lead.last_name": "Hopperlastname",
    "lead.ssn": "987-65-4321",
    "lead.dob": "1906-12-09",
}
CLEAR_TEXT = ("grace.hopper", "2025550199", "555-0199", "Hopperlastname", "987-65", "12-09")
DAY_MS = 86_400_000


@dataclass
class Seeded:
    """The seeded app's settings, ids and keys (plaintext, by role)."""

    settings: Settings
    flow_a: str
    flow_b: str
    lead_a: str
    lead_b: str
    delivery_a: str  # to premier, today
    old_delivery_a: str  # to premier, 400 days ago
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None, **settings: Any) -> TestClient:
        """A client sending ``role``'s key (none for None), on an app with ``settings``."""
        app = create_app(self.settings.model_copy(update=settings))
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return TestClient(app, headers=headers)


def _seed(settings: Settings, flow: str, submitted_ms: int) -> list[dict[str, Any]]:
    events = make_lead_events(flow_id=flow, submitted_ms=submitted_ms)
    for event in events:
        event["vars"].update(PII)
    return list(events)


@pytest.fixture(scope="module")
def seeded(stack: Settings) -> Iterator[Seeded]:
    schema = "t" + uuid.uuid4().hex[:10]
    settings = stack.model_copy(
        update={
            "db_schema": schema,
            "export_worker_in_api": False,
            "api_key_cache_seconds": 0.0,  # a revoked key is refused at once
            "feedback_topic": f"leadflow.{schema}.feedback",
        }
    )
    migrate_database(settings)
    now = int(time.time() * 1000)
    flow_a, flow_b = f"{schema}a", f"{schema}b"
    lead_a = _seed(settings, flow_a, now)
    old_a = _seed(settings, flow_a, now - 400 * DAY_MS)
    lead_b = _seed(settings, flow_b, now)
    codec = EventCodec()
    every = lead_a + old_a + lead_b
    records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(every)]  # type: ignore[arg-type]
    with connect(settings) as conn:
        write_batch(conn, "test", build_batch(codec, records))
        wait_visible(conn)
    delivered = "recipient.delivered"
    found = Seeded(
        settings,
        flow_a,
        flow_b,
        lead_a[0]["lead_id"],
        lead_b[0]["lead_id"],
        next(e["id"] for e in lead_a if e["type"] == delivered),
        next(e["id"] for e in old_a if e["type"] == delivered),
    )
    roles: dict[str, tuple[list[str], list[str] | None]] = {
        "reader": (["events:read", "stats", "exports"], None),  # no pii:read
        "pii": (["events:read", "stats", "exports", "pii:read"], None),
        # Routes under flows:admin (system events: flow definitions, no lead data).
        "admin": (["events:read", "stats", "exports", "flows:admin"], None),  # no pii:read
        "reader_a": (["events:read", "stats", "exports"], [flow_a]),
        "premier": (["feedback:premier"], None),
        "other_buyer": (["feedback:elsewhere"], None),
        "intake_only": (["intake:nosource"], None),  # every other route: 403
        "revoked": (["events:read", "stats", "exports", "pii:read", "flows:admin"], None),
    }
    for role, (scopes, flows) in roles.items():
        stored, key = create_key(settings, role, scopes, flows)
        found.keys[role] = key
        if role == "revoked":
            revoke_key(settings, stored.key_id)
    found.keys["unknown"] = "lf_000000000000_" + "A" * 43
    found.keys["garbage"] = "not-a-key"
    yield found
    _drop_schemas_of(stack, schema)
