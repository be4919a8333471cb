"""``python -m chaos`` (``make chaos``): run a flow under faults, print the summary, exit 1 on
any lost or duplicated event, dead-letter mismatch or stuck consumer group."""

from __future__ import annotations

import argparse
import sys

from chaos import faults
from chaos.report import save, show
from chaos.run import RunConfig, run
from engine.logs import configure_logging


def parse(argv: list[str] | None) -> RunConfig:
    d = RunConfig()
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--leads", type=int, default=d.leads)
    p.add_argument("--rate", type=float, default=d.rate, help="leads per second")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--faults",
        default=",".join(d.faults),
        help=f"comma-separated subset of {','.join(faults.ALL_FAULTS)} ('none' for none)",
    )
    p.add_argument("--kills", type=int, default=d.kills, help="kill -9 of a random worker")
    p.add_argument("--store-outage", type=float, default=d.store_outage_s, help="seconds")
    p.add_argument("--poison", type=int, default=d.poison)
    p.add_argument("--malformed", type=int, default=d.malformed)
    p.add_argument("--oversized", type=int, default=d.oversized)
    p.add_argument("--slow", type=int, default=d.slow)
    p.add_argument("--inflight", type=int, default=d.inflight, help="leads of inflight_kill")
    p.add_argument(
        "--settle-timeout", type=float, default=d.settle_timeout_s,
        help="seconds: the longest the run may take to drain once submission ends",
    )  # fmt: skip
    p.add_argument(
        "--settle-stall", type=float, default=d.settle_stall_s,
        help="seconds without any progress after which the run counts as stuck",
    )  # fmt: skip
    p.add_argument("--soak", type=float, default=0.0, help="soak for this many seconds")
    p.add_argument("--sample-every", type=float, default=d.sample_every_s)
    p.add_argument("--keep-kafka3", action="store_true", help="leave the 3-node cluster up")
    a = p.parse_args(argv)
    chosen = () if a.faults == "none" else tuple(f for f in a.faults.split(",") if f)
    unknown = set(chosen) - set(faults.ALL_FAULTS)
    if unknown:
        p.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    return RunConfig(
        leads=a.leads, rate=a.rate, seed=a.seed, faults=chosen, kills=a.kills,
        store_outage_s=a.store_outage, poison=a.poison, malformed=a.malformed,
        oversized=a.oversized, slow=a.slow, inflight=a.inflight, settle_timeout_s=a.settle_timeout,
        settle_stall_s=a.settle_stall, soak_s=a.soak,
        sample_every_s=a.sample_every, keep_kafka3=a.keep_kafka3,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    configure_logging("console", "INFO")
    result = run(parse(argv))
    path = save(result)
    show(result)
    print(f"results: {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
