"""One round of one scenario in a process of its own: ``python -m bench.child NAME JSON``.

A fresh process per round keeps rounds independent (no warm caches, no GIL
shared with the harness, Quix Streams free to own the main thread and its
signal handlers) and makes its peak RSS its own. The last line printed is the
round's figures as JSON. A round still running after the seconds in the optional third
argument dumps every thread's stack to stderr and exits (the harness shows them).
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    name, params = argv[0], json.loads(argv[1])
    if len(argv) > 2:  # the harness's hang deadline: every thread's stack, then exit
        faulthandler.dump_traceback_later(float(argv[2]), exit=True)
    module = importlib.import_module(f"bench.scenarios.{name}")
    figures: dict[str, Any] = module.run_round(params)
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
