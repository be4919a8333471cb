"""A projector meeting an unknown schema id while the registry is down waits; it rejects
nothing (the record is fine, only its writer schema cannot be fetched yet)."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

from engine.settings import Settings
from projectors.batch import Record
from projectors.projector import ProjectorStopped, TimelineProjector
from schemas.codec import EventCodec
from tests.factories import make_lead_events


def test_a_registry_outage_is_waited_out_and_no_record_is_rejected(settings: Settings) -> None:
    # Nothing listens on the discard port: every try is refused at once.
    down = settings.model_copy(update={"schema_registry_url": "http://127.0.0.1:9/apis/ccompat/v7"})
    projector = TimelineProjector(down)
    value = EventCodec(schema_id=12345).encode(make_lead_events()[0])
    threading.Timer(1.5, projector._stop.set).start()
    with capture_logs() as logs, pytest.raises(ProjectorStopped):
        projector.process_batch([Record("leadflow.x.events.source", 0, 0, value)])
    waits = [e for e in logs if e["event"] == "schema registry unavailable, retrying"]
    assert [e["attempt"] for e in waits[:2]] == [1, 2]
    assert not [e for e in logs if e["event"] == "undecodable record rejected"]
