"""The engine's shared state in Postgres: cap counters and duplicate fingerprints.

Pure decisions (``windows``, ``caps``, ``duplicates``) are apart from the SQL
adapter (``store``), which keys every write by lead id so that crashes,
retries, rebalances and replays never count a lead twice.
"""

from engine.state.caps import (
    CapCheck,
    CapCount,
    cap_checks,
    flow_scope,
    recipient_cap_reason,
    recipient_scope,
    source_cap_reason,
    source_scope,
)
from engine.state.duplicates import LeadOrder, duplicate_reason, fingerprint
from engine.state.errors import StateError, StateMigrationError, StateUnavailableError
from engine.state.postgres import migrate_state
from engine.state.store import Admission, DuplicateCheck, StateStore
from engine.state.windows import Window, window_for

__all__ = [
    "Admission",
    "CapCheck",
    "CapCount",
    "DuplicateCheck",
    "LeadOrder",
    "StateError",
    "StateMigrationError",
    "StateStore",
    "StateUnavailableError",
    "Window",
    "cap_checks",
    "duplicate_reason",
    "fingerprint",
    "flow_scope",
    "migrate_state",
    "recipient_cap_reason",
    "recipient_scope",
    "source_cap_reason",
    "source_scope",
    "window_for",
]
