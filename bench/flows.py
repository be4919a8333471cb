"""The flows the bench runs, as YAML like any user's (``engine.flows.parse_flow`` validates them).

The filter is the demo's service-area filter: two rules over the lead's own fields,
followed by a buyer as in the demo, so a lead it stops gets its ``flow.completed`` there.
"""

from __future__ import annotations

from engine.flows import Flow, parse_flow

FILTER_FLOW = """
id: {flow_id}
name: Bench filter
version: 1
topics: {{partitions: {partitions}, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form A
    settings:
      fields:
        - {{name: email, type: email, required: true}}
        - {{name: state, type: state, required: true}}
  - id: service-area
    kind: filter
    name: Service area
    settings:
      rules:
        - {{name: Service area, field: lead.state, op: in,
           value: [TX, CA, FL, AZ, NV, NM, CO, UT, GA, NC]}}
        - {{name: Consent given, field: lead.tcpa_consent, op: equals, value: true}}
  # Never run by the bench: it keeps the filter from being the last step, which would
  # add a flow.completed to every lead instead of only to the ones it stops.
  - id: buyer
    kind: recipient
    name: Buyer
    settings:
      url: http://127.0.0.1:9/leads
      mapping: {{email: lead.email}}
"""

# source -> enhancement -> filter -> two buyers; flow.completed comes with the last
# step a lead reaches (the sixth "step" of issue #7 is that completion).
E2E_FLOW = """
id: {flow_id}
name: Bench end to end
version: 1
topics: {{partitions: {partitions}, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form A
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
  - id: phone-check
    kind: enhancement
    name: Phone check
    settings:
      url: {buyer_url}/enhance/phone
      key: phone_check
      timeout_ms: 2000
      mapping: {{phone: lead.phone_1, email: lead.email}}
  - id: service-area
    kind: filter
    name: Service area
    settings:
      rules:
        - {{name: Service area, field: lead.state, op: in,
           value: [TX, CA, FL, AZ, NV, NM, CO, UT, GA, NC]}}
        - {{name: Consent given, field: lead.tcpa_consent, op: equals, value: true}}
  - id: premier
    kind: recipient
    name: Premier Leads LLC
    settings:
      url: {buyer_url}/leads
      timeout_ms: 5000
      mapping: {{first: lead.first_name, email: lead.email, phone: lead.phone_1,
                 state: lead.state}}
      accept: {{path: outcome, value: success}}
      reason_path: reason
      price_path: price
  - id: summit
    kind: recipient
    name: Summit Home Services
    settings:
      url: {buyer_url}/leads
      format: form
      timeout_ms: 5000
      mapping: {{email: lead.email, phone: lead.phone_1, zip: lead.postal_code}}
destinations:
  - {{kind: s3, bucket: leadflow-events, prefix: {flow_id}, format: jsonl.gz}}
"""


def filter_flow(flow_id: str, partitions: int) -> Flow:
    return parse_flow(FILTER_FLOW.format(flow_id=flow_id, partitions=partitions), "bench-filter")


def e2e_flow(flow_id: str, partitions: int, buyer_url: str) -> Flow:
    text = E2E_FLOW.format(flow_id=flow_id, partitions=partitions, buyer_url=buyer_url)
    return parse_flow(text, "bench-e2e")


# The HTTP intake scenario: a source taking leads over HTTP (key by env reference), the
# service-area filter, and a buyer; the POST waits for the source's verdict.
INTAKE_KEY_ENV = "LEADFLOW_BENCH_INTAKE_KEY"
INTAKE_FLOW = """
id: {flow_id}
name: Bench HTTP intake
version: 1
topics: {{partitions: {partitions}, replication: 1}}
steps:
  - id: source
    kind: source
    name: Web form A
    settings:
      intake:
        auth: {{key_env: {key_env}}}
        wait_for: source
        timeout_ms: 30000
      fields:
        - {{name: email, type: email, required: true}}
        - {{name: state, type: state, required: true}}
  - id: service-area
    kind: filter
    name: Service area
    settings:
      rules:
        - {{name: Service area, field: lead.state, op: in,
           value: [TX, CA, FL, AZ, NV, NM, CO, UT, GA, NC]}}
        - {{name: Consent given, field: lead.tcpa_consent, op: equals, value: true}}
"""


def intake_flow_text(flow_id: str, partitions: int) -> str:
    return INTAKE_FLOW.format(flow_id=flow_id, partitions=partitions, key_env=INTAKE_KEY_ENV)


def intake_flow(flow_id: str, partitions: int) -> Flow:
    return parse_flow(intake_flow_text(flow_id, partitions), "bench-intake")
