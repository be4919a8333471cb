"""The flow a chaos run drives: source, filter, one recipient; replicated on the 3-node
cluster; streamed per event to S3 and in batches to Azure, so both streamer paths are hit."""

from __future__ import annotations

from pathlib import Path

from engine.flows import Flow, parse_flow

# Room for a 300 ms answer while hundreds are in flight on a loaded machine (inflight_kill),
# and well short of the slow buyer's answer (slow_buyer: an error past the deadline).
RECIPIENT_TIMEOUT_MS = 1500
SLOW_BUYER_S = 4.0

_FLOW = """\
id: {flow_id}
name: Chaos {flow_id}
version: 1
topics: {{partitions: 3, replication: 3}}
steps:
  - id: source
    kind: source
    name: Web form
    settings:
      cost: 2.5
      fields:
        - {{name: first_name, required: true}}
        - {{name: last_name, required: true}}
        - {{name: email, type: email, required: true}}
        - {{name: phone_1, type: phone, required: true}}
        - {{name: state, type: state, required: true}}
        - {{name: postal_code, type: postal_code}}
        - {{name: tcpa_consent, type: boolean, required: true}}
  - id: service-area
    kind: filter
    name: Service area
    settings:
      rules:
        - {{name: Service area, field: lead.state, op: in, value: [TX, CA, FL, AZ, NV]}}
        - {{name: Consent given, field: lead.tcpa_consent, op: equals, value: true}}
  - id: premier
    kind: recipient
    name: Premier Leads LLC
    settings:
      url: {buyer_url}
      timeout_ms: {timeout_ms}
      mapping: {{first: lead.first_name, email: lead.email, state: lead.state}}
      accept: {{path: outcome, value: success}}
      reason_path: reason
      price_path: price
      id_path: id
destinations:
  - {{kind: s3, bucket: leadflow-events, prefix: {prefix}}}
  - kind: azure_blob
    bucket: leadflow-events
    prefix: {prefix}
    format: jsonl.gz
    batch: {{max_records: 200, max_seconds: 2}}
"""


def chaos_flow(flow_id: str, buyer_url: str, prefix: str, path: Path) -> Flow:
    """Write the flow file the workers load and return the parsed flow."""
    text = _FLOW.format(
        flow_id=flow_id, buyer_url=buyer_url, prefix=prefix, timeout_ms=RECIPIENT_TIMEOUT_MS
    )
    path.write_text(text, encoding="utf-8")
    return parse_flow(text, str(path))
