"""The demo's master key: a file made on the first ``make demo`` (never committed).

The demo flow seals its personal fields, so every process of it needs a master key.
An operator's own key (``LEADFLOW_MASTER_KEY`` or ``LEADFLOW_MASTER_KEY_FILE``) always
wins; otherwise the demo makes ``.stack/master.key`` (git ignores ``.stack/``) and points
the environment at it, so the workers, the API and the UI server it starts find it.
Losing this file makes the demo's sealed data unreadable, as losing any master key would.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from engine.flows import Flow
from engine.sealing import new_master_key_text
from engine.settings import Settings

DEMO_MASTER_KEY = Path(".stack/master.key")


def ensure_demo_master_key(
    settings: Settings,
    flow: Flow,
    path: Path = DEMO_MASTER_KEY,
    environ: MutableMapping[str, str] = os.environ,
) -> Path | None:
    """The key file the demo uses (made now if missing), or None when the flow does not
    seal or a master key is already configured."""
    configured = (
        settings.master_key is not None
        or settings.master_key_file is not None
        or environ.get("LEADFLOW_MASTER_KEY")
        or environ.get("LEADFLOW_MASTER_KEY_FILE")
    )
    if not flow.seals or configured:
        return None
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created with 0600 from the start: never a moment where others may read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(new_master_key_text() + "\n")
    environ["LEADFLOW_MASTER_KEY_FILE"] = str(path.resolve())
    return path
