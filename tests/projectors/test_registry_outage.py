"""A projector meeting an unknown schema id while the registry is down waits; it rejects
nothing (the record is fine, only its writer schema cannot be fetched yet)."""

from __future__ import annotations

import threading
import time

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
    with capture_logs() as logs:

        def waits() -> list[dict[str, object]]:
            return [e for e in logs if e["event"] == "schema registry unavailable, retrying"]

        def stop_after_two_waits() -> None:
            # Stopped once it has waited twice (not after a fixed time: on a loaded machine
            # the second try may come late), or after 30 s, when the assertion below fails.
            deadline = time.monotonic() + 30
            while len(waits()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            projector._stop.set()

        threading.Thread(target=stop_after_two_waits, daemon=True).start()
        with pytest.raises(ProjectorStopped):
            projector.process_batch([Record("leadflow.x.events.source", 0, 0, value)])
    assert [e["attempt"] for e in waits()[:2]] == [1, 2]
    assert not [e for e in logs if e["event"] == "undecodable record rejected"]
