"""The results document's shape, the ratios against their targets, and the files written."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from bench.report import Target, document, print_tables, ratios, write
from bench.results_model import ScenarioResult
from bench.stats import summarize


def _results() -> dict[str, ScenarioResult]:
    passthrough = ScenarioResult("passthrough", "events_s", "events/s")
    step = ScenarioResult("step", "events_s", "events/s")
    for p, s in ((100.0, 70.0), (120.0, 60.0), (80.0, 65.0)):
        passthrough.add({"events_s": p, "mb_s": p / 10}, {"mb_s": "MB/s"})
        step.add({"events_s": s})
    peer = ScenarioResult("peer", "events_s", "events/s")
    peer.errors.append("round 1: quixstreams not installed")
    return {"passthrough": passthrough, "step": step, "peer": peer}


def test_ratios_use_medians_and_report_their_targets() -> None:
    out = ratios(_results())
    assert out["step / passthrough"] == {"value": 0.65, "target": ">= 0.6", "met": True}
    # The peer has no figure: its ratio is left out rather than shown as zero.
    assert "leadflow step / Quix Streams" not in out


def test_targets_compare_as_written() -> None:
    assert Target(">=", 2).met(2.0) and not Target(">=", 2).met(1.9)
    assert Target("<", 1).met(0.5) and not Target("<", 1).met(1.0)
    assert str(Target("<=", 500)) == "<= 500"


def test_scenario_figures_carry_median_min_max_values_and_unit() -> None:
    scenario = _results()["passthrough"].as_dict()
    assert scenario["primary"] == "events_s"
    assert scenario["figures"]["events_s"] == {
        "median": 100.0, "min": 80.0, "max": 120.0, "values": [100.0, 120.0, 80.0],
        "unit": "events/s",
    }  # fmt: skip
    assert scenario["figures"]["mb_s"]["unit"] == "MB/s"


def test_document_is_json_with_run_machine_scenarios_and_ratios(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    doc = document({"run_id": "r1", "quick": True}, _results(), datetime(2026, 1, 2, tzinfo=UTC))
    assert set(doc) == {"schema", "started_at", "finished_at", "run", "machine", "scenarios",
                        "ratios"}  # fmt: skip
    assert doc["machine"]["cpus"] >= 1 and "librdkafka" in doc["machine"]
    assert doc["scenarios"]["peer"]["errors"] == ["round 1: quixstreams not installed"]
    path = write(doc, tmp_path)
    assert path.name == "20260102T000000Z.json"
    assert json.loads(path.read_text()) == json.loads((tmp_path / "latest.json").read_text())


def test_the_table_shows_every_figure_and_ratio() -> None:
    from datetime import UTC, datetime

    console = Console(record=True, width=160)
    print_tables(document({"run_id": "r1"}, _results(), datetime.now(UTC)), console)
    text = console.export_text()
    assert "step / passthrough" in text and "0.650" in text
    assert "mb_s" in text and "quixstreams not installed" in text


def test_summaries_of_failed_scenarios_are_absent() -> None:
    assert summarize(_results()["peer"].rounds.get("events_s", [])) is None


def test_streamer_ratios_compare_each_case_with_its_bare_loop() -> None:
    streamer = ScenarioResult("streamer", "events_s", "events/s")
    streamer.add(
        {
            "s3_per_event.objects_s": 240.0,
            "s3_per_event.bare_objects_s": 300.0,
            "s3_batched.mb_s": 1.0,
            "s3_batched.bare_mb_s": 4.0,
        }
    )
    out = ratios({"streamer": streamer})
    assert out["streamer s3 per-event objects/s / bare PUT loop"]["value"] == 0.8
    assert out["streamer s3 batched MB/s / bare PUT loop"]["value"] == 0.25
    # Azure was not measured: its ratios are left out, not shown as zero.
    assert not any(label.startswith("streamer azure") for label in out)


def test_scale_out_ratio_is_cpu_per_event_of_four_processes_over_one() -> None:
    scale = ScenarioResult("scale_out", "events_s_per_process", "events/s")
    scale.add({"p1.cpu_ms_per_event": 0.1, "p4.cpu_ms_per_event": 0.13})
    out = ratios({"scale_out": scale})["scale_out CPU/event, 4 processes / 1"]
    assert round(out["value"], 6) == 1.3 and out["target"] == "<= 1.2" and out["met"] is False
