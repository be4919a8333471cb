"""Chaos workloads are reproducible from a seed and every lead's path is fixed in advance."""

from __future__ import annotations

import random
from pathlib import Path

from chaos.faults import FaultPlan, schedule
from chaos.flow import chaos_flow
from chaos.soak import summary
from chaos.workload import PATHS, has_nul, junk_leads, regular_leads, rejected_by_source
from tests.chaos.test_chaos import REDUCED


def test_junk_is_reproducible_and_rejected_by_the_source_step(tmp_path: Path) -> None:
    flow = chaos_flow("chaos-unit", "http://127.0.0.1:9/leads", "chaos/unit", tmp_path / "f.yaml")
    first = junk_leads(flow, "unit", malformed=30, oversized=3, at_seed=11, start=0)
    again = junk_leads(flow, "unit", malformed=30, oversized=3, at_seed=11, start=0)
    assert [lead.body for lead in first] == [lead.body for lead in again]
    assert {lead.kind for lead in first} == {"malformed", "oversized"}
    rejects = rejected_by_source(flow)
    assert all(rejects(lead.body) for lead in first)
    assert all(len(lead.body) >= 150_000 for lead in first if lead.kind == "oversized")


def test_the_reduced_run_submits_a_lead_with_a_nul_character(tmp_path: Path) -> None:
    # Postgres cannot store NUL (the timeline shows U+FFFD): make test must cover such a lead.
    flow = chaos_flow("chaos-unit", "http://127.0.0.1:9/leads", "chaos/unit", tmp_path / "f.yaml")
    junk = junk_leads(flow, "unit", REDUCED.malformed, REDUCED.oversized, REDUCED.seed, 0)
    assert any(has_nul(lead.body) for lead in junk)


def test_expected_event_ids_follow_the_timeline_and_differ_between_leads() -> None:
    leads = regular_leads(random.Random(3), "unit", 50)
    ids = [i for lead in leads for i, _ in lead.expected()]
    assert len(ids) == len(set(ids))
    for lead in leads:
        expected = lead.expected()
        assert [t for _, t in expected] == [t for *_, t in PATHS[lead.kind]]
        assert [i for i, _ in expected] == sorted(i for i, _ in expected)
        assert expected[-1][1] == "flow.completed"


def test_the_fault_schedule_is_seeded_and_service_faults_do_not_overlap() -> None:
    plan = FaultPlan(("worker_kill", "broker_kill", "store_outage"), kills=5, store_outage_s=5)
    one = schedule(random.Random(1), plan, 100)
    assert one == schedule(random.Random(1), plan, 100)
    assert [k for _, k in one].count("worker_kill") == 5
    (broker,) = [at for at, k in one if k == "broker_kill"]
    (store,) = [at for at, k in one if k == "store_outage"]
    assert broker < store


def test_the_soak_summary_takes_each_workers_first_last_and_peak_rss_and_the_peak_lag() -> None:
    samples = [
        {"t_s": 10, "rss_mb": {"source": None, "projector": 80.0}, "lag": {"a": 5, "b": 1}},
        {"t_s": 20, "rss_mb": {"source": 60.0, "projector": 95.0}, "lag": None},
        {"t_s": 30, "rss_mb": {"source": 61.5, "projector": 82.0}, "lag": {"a": 2, "b": 9}},
    ]
    got = summary(samples)
    assert got["rss_mb"] == {
        "projector": {"start": 80.0, "end": 82.0, "max": 95.0},
        "source": {"start": 60.0, "end": 61.5, "max": 61.5},
    }
    assert got["max_lag"] == {"a": 5, "b": 9}
    assert (got["max_total_lag"], got["last_total_lag"]) == (11, 11)
    assert (got["samples"], got["samples_without_lag"]) == (3, 1)
