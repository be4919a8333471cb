"""replay: rebuilding the timeline projection from the topics (``leadflow replay timeline``).

``projectors.replay.Rebuild`` over the shared input topic into a fresh serving
schema per round: read, decode, write each batch with its checkpoints, then the
switch. Rate = records written / the rebuild's own seconds (group join and the
switch included, as an operator waiting for it sees them).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from engine.logs import configure_logging
from engine.settings import Settings
from projectors.replay import Rebuild


def run_round(params: dict[str, Any]) -> dict[str, float]:
    configure_logging("json", "WARNING")
    settings = Settings(
        db_schema=f"b{params['run_id']}r{params['round']}",
        projector_pattern=rf"^{re.escape(params['input_topic'])}$",
    )
    result = Rebuild(settings, "timeline").run(threading.Event())
    if not result.switched or result.records < params["events"]:
        raise RuntimeError(f"rebuild wrote {result.records} records, switched={result.switched}")
    return {"events_s": result.records / result.seconds, "seconds": result.seconds}
