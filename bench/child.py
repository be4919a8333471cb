"""One round of one scenario in a process of its own: ``python -m bench.child NAME JSON``.

A fresh process per round keeps rounds independent (no warm caches, no GIL
shared with the harness, Quix Streams free to own the main thread and its
signal handlers) and makes its peak RSS its own. The last line printed is the
round's figures as JSON.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    name, params = argv[0], json.loads(argv[1])
    module = importlib.import_module(f"bench.scenarios.{name}")
    figures: dict[str, Any] = module.run_round(params)
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
