"""The Quix Streams application's settings, importable where quixstreams is not installed
(the harness records them in the results even when the peer cannot run)."""

from __future__ import annotations

from typing import Any

SETTINGS: dict[str, Any] = {
    "processing_guarantee": "exactly-once",
    "auto_offset_reset": "earliest",
    "producer_extra_config": {"linger.ms": 5, "compression.type": "lz4"},
    "use_changelog_topics": False,  # a stateless filter: no state, no changelog
    "loglevel": "WARNING",
}
