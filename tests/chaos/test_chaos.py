"""The reduced chaos run of ``make test``: fewer leads and a subset of the faults (kill -9 of
workers, one broker killed on the 3-node cluster, a short store outage, a poison burst with a
NUL-character lead, a slow buyer, the buyer step killed with hundreds of calls in flight);
every event must still be exactly once in the topics,
Postgres, S3 and Azure."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.report import save
from chaos.run import RunConfig, run

REDUCED = RunConfig(
    leads=500,
    rate=25,
    seed=20261124,
    faults=(
        "worker_kill",
        "broker_kill",
        "store_outage",
        "poison_burst",
        "slow_buyer",
        "inflight_kill",
    ),
    kills=4,
    store_outage_s=10,
    malformed=30,
    oversized=3,
    poison=10,
    slow=6,
    inflight=400,
    # Settling lasts as long as the flow drains (a loaded machine is slower, not wrong),
    # up to this bound; a run where nothing moves for settle_stall_s is stuck and fails.
    settle_timeout_s=420,
    settle_stall_s=120,
)


@pytest.mark.stack
@pytest.mark.serial  # kills brokers and workers at chosen moments: the machine to itself
@pytest.mark.timeout(900)  # set-up, faults (brokers back in sync), settle bound, checks
def test_reduced_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = run(REDUCED)
    save(result, tmp_path)
    assert result["fault_errors"] == []
    assert set(result["fault_counts"]) == set(REDUCED.faults)
    for sink in result["sinks"]:
        shown = {k: v[:5] if isinstance(v, list) else v for k, v in sink.items()}
        assert sink["ok"], {**shown, "settled": result["settled"], "exits": result["worker_exits"]}
    assert result["dead_letter_topic"]["ok"], result["dead_letter_topic"]
    assert result["dead_letter_objects"] == {"s3": REDUCED.poison, "azure_blob": REDUCED.poison}
    assert result["leads_with_wrong_timeline"] == []
    assert result["stuck_groups"] == {}
    # The projector refuses the planted poison and nothing else: the NUL lead is in its timeline.
    assert result["projector_refusals"]["ok"], result["projector_refusals"]
    assert result["projector_rejects"] == []
    assert result["leads_refused_by_kafka"] == 0
    assert result["ok"]
