"""The step scenario's input with sealing on: the same leads as the shared input, their
personal fields sealed as the source step seals them, their data keys in Postgres.

``step_sealed`` then runs the same filter step as ``step`` on a flow that declares those
fields sensitive: the filter reads the lead's state and consent, neither of them sealed,
so no key is looked up and its events carry the tokens they came with (a step that reads
a sealed field looks up its batch's keys in one query and opens what it reads). The
ratio of the two is the cost of encryption for such a step: larger records, and the
bookkeeping of what is sealed.
"""

from __future__ import annotations

import base64
from typing import Any

from psycopg import sql

from bench.inputs import Headers, accepted_events
from engine.flows import Flow
from engine.sealing import MasterKey, new_data_key, seal, seal_snapshot, wrap_key
from engine.settings import Settings
from engine.state.postgres import connect, migrate_state

# The demo flow's personal fields (flows/demo.yaml ``sensitive_fields``).
SENSITIVE = ["first_name", "last_name", "email", "phone_1", "postal_code", "trustedform_cert_url"]


def sealing(flow: Flow) -> Flow:
    """``flow`` declaring the demo's personal fields sensitive."""
    return flow.model_copy(update={"sensitive_fields": SENSITIVE})


def sealed_events(
    settings: Settings, master_text: str, flow: Flow, count: int
) -> list[tuple[bytes, bytes, Headers]]:
    """The shared input's leads with their personal fields sealed; their wrapped keys
    stored in ``settings.db_schema``."""
    master = MasterKey(base64.b64decode(master_text))
    keys: dict[str, bytes] = {}

    def seal_vars(lead_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
        key = keys[lead_id] = new_data_key()
        return seal_snapshot(snapshot, flow.sensitive, lambda v: seal(key, lead_id, v))

    records = accepted_events(flow.id, count, transform=seal_vars)
    migrate_state(settings)
    rows = [(i, flow.id, master.key_id, wrap_key(master, i, k)) for i, k in keys.items()]
    with connect(settings) as conn, conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO engine_lead_keys (key_id, flow_id, master_key_id, wrapped)"
                " VALUES (%s, %s, %s, %s)"
            ),
            rows,
        )
    return records
