"""``leadflow flow apply`` verifies destinations; ``leadflow streamer verify|disable|enable``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.destinations import Destination
from engine.runtime.registry import delete_flow
from engine.settings import Settings, get_settings
from streamers.lifecycle import ACTIVATED, DEACTIVATED, read_events
from tests.factories import write_flow
from tests.streamers.support import streaming_flow

pytestmark = pytest.mark.stack

WIDE = {"COLUMNS": "250"}


@pytest.fixture
def schema_settings(
    stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    monkeypatch.setenv("LEADFLOW_DB_SCHEMA", unique_id)
    get_settings.cache_clear()
    own = stack.model_copy(update={"db_schema": unique_id})
    yield own
    get_settings.cache_clear()
    # No later `leadflow run` should start its workers; its flow.deleted goes to the test's
    # own outbox, not the shared schema's.
    delete_flow(own, unique_id)


def test_apply_keeps_the_flow_and_reports_a_failing_destination_users_disable_and_enable(
    schema_settings: Settings, unique_id: str, tmp_path: Path
) -> None:
    flow = streaming_flow(schema_settings, unique_id, prefix=unique_id)
    bad = Destination(id="bad", kind="azure_blob", bucket="no-such-container", prefix=unique_id)
    flow = flow.model_copy(update={"destinations": [*flow.destinations, bad]})
    flow_file = write_flow(tmp_path / "flow.yaml", flow)

    applied = CliRunner().invoke(app, ["flow", "apply", str(flow_file)], env=WIDE)

    assert applied.exit_code == 0, applied.output  # the flow is applied all the same
    assert f"flow.created: flow {unique_id}" in applied.output
    assert "bad (azure_blob:no-such-container/" in applied.output
    assert "ContainerNotFound (HTTP 404)" in applied.output
    assert "1 destination(s) failed verification" in applied.output
    enable = CliRunner().invoke(app, ["streamer", "enable", unique_id, "bad"], env=WIDE)
    assert enable.exit_code == 1 and "ContainerNotFound" in enable.output

    s3 = flow.destinations[0].key
    assert CliRunner().invoke(app, ["streamer", "disable", unique_id, s3]).exit_code == 0
    again = CliRunner().invoke(app, ["streamer", "verify", unique_id, s3], env=WIDE)
    assert again.exit_code == 0 and "disabled" in again.output
    assert CliRunner().invoke(app, ["streamer", "enable", unique_id, s3]).exit_code == 0
    unknown = CliRunner().invoke(app, ["streamer", "enable", unique_id, "nope"])
    assert unknown.exit_code != 0

    recorded = [(e.type, e.destination) for e in read_events(schema_settings, unique_id)]
    assert sorted(recorded[:3]) == sorted(
        [(ACTIVATED, s3), (ACTIVATED, flow.destinations[1].key), (DEACTIVATED, "bad")]
    )
    assert recorded[3:] == [(DEACTIVATED, s3), (ACTIVATED, s3)]
