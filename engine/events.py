"""Turn a step's drafts into complete, immutable lead events (the Avro record)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.flows import Flow, SourceStep
from engine.ids import event_id
from engine.steps.base import EventDraft, Snapshot
from engine.steps.pings import ping_limit_objects

EVENT_SCHEMA_VERSION = "6"
RETENTION_MS = 90 * 24 * 3600 * 1000  # the default of Flow.retention_days

LeadEvent = dict[str, Any]

# Every event type the engine records, object.action as in the seeds.
EVENT_TYPES = (
    "source.submitted",
    "source.accepted",
    "source.rejected",
    "enhancement.success",
    "enhancement.failure",
    "enhancement.error",
    "filter.passed",
    "filter.failed",
    "recipient.delivered",
    "recipient.failed",
    "recipient.error",
    "retry.scheduled",
    "retry.attempted",
    "flow.completed",
    "feedback.received",
    "feedback.processed",
    "source.pinged",
    # An auction's ping to one buyer (its bid, no bid, a late bid or an error).
    "recipient.pinged",
)


@dataclass(frozen=True, slots=True)
class StepIdentity:
    """Who records the event: the flow, the step, and the code that ran it."""

    flow_id: str
    flow_version: int
    step_id: str
    step_name: str
    step_index: int
    host: str
    handler_version: str
    # The flow's retention (``Flow.retention_ms``): each event expires this long after it.
    retention_ms: int = RETENTION_MS
    context: FlowContext | None = None


@dataclass(frozen=True, slots=True)
class FlowContext:
    """What every event of a flow (version) says about the flow itself: where it streams
    its events (``firehose``) and the ping limits of its source, each with its counter's id."""

    firehose: dict[str, Any] | None = None
    flow_ping_limits: list[dict[str, Any]] | None = None
    source_ping_limits: list[dict[str, Any]] | None = None


def flow_context(flow: Flow) -> FlowContext:
    """The flow's ``FlowContext``, built once per handler (the flow is fixed per version)."""
    enabled = [d.key for d in flow.destinations if d.enabled]
    firehose = {"destinations": enabled} if enabled else None
    source = flow.steps[0]
    ping = (
        source.settings.intake.ping
        if isinstance(source, SourceStep) and source.settings.intake is not None
        else None
    )
    if ping is None or not ping.limits:
        return FlowContext(firehose)
    flow_limits, source_limits = ping_limit_objects(flow.id, source.id, ping.limits)
    return FlowContext(firehose, flow_limits or None, source_limits or None)


@dataclass(frozen=True, slots=True)
class Timing:
    """When a step handled a lead, how late it came, and how much of the handling was
    spent waiting on a service (the rest is the engine's own overhead)."""

    start_ms: int
    end_ms: int
    lag_ms: int
    wait_ms: int = 0


_NO_CONTEXT = FlowContext()


def stamp_events(
    drafts: list[EventDraft],
    who: StepIdentity,
    lead_id: str,
    submitted_ms: int,
    snapshot_before: Snapshot,
    timing: Timing,
    attempt: int = 1,
    ids: Sequence[str] | None = None,
    step_count: int | None = None,
) -> list[LeadEvent]:
    """Each draft becomes an event whose ``vars`` is the snapshot before the
    step plus what the draft changed; positions give deterministic ids (or ``ids``,
    one per draft, where the position is not a step's: buyer feedback, which also
    keeps the ``step_count`` of the delivery it refers to)."""
    if ids is not None and len(ids) != len(drafts):
        raise ValueError(f"{len(ids)} ids for {len(drafts)} events")
    count = who.step_index + 1 if step_count is None else step_count
    events = []
    context = who.context or _NO_CONTEXT
    for seq, draft in enumerate(drafts):
        at = draft.at_ms
        start, end = (timing.start_ms, timing.end_ms) if at is None else (at, at)
        ms = max(0, end - start)
        snapshot = {**snapshot_before, **draft.vars} if draft.vars else snapshot_before
        # Every event of the handling reports the service's wait, whatever its kind: a
        # ``retry.scheduled`` after a 5 s timeout waited 5 s, the engine did not spend them.
        wait = max(draft.wait_ms, timing.wait_ms)
        request = draft.request
        if request is not None and "timestamp" not in request:
            request = {**request, "timestamp": timing.start_ms}
        events.append(
            {
                "id": ids[seq]
                if ids is not None
                else event_id(lead_id, submitted_ms, who.step_index, seq, attempt),
                "type": draft.type,
                "outcome": draft.outcome,
                "reason": draft.reason,
                "lead_id": lead_id,
                "flow_id": who.flow_id,
                "flow_version": who.flow_version,
                "step_id": who.step_id,
                "step_name": who.step_name,
                "entity_id": draft.entity_id,
                "timestamp": end,
                "start_timestamp": start,
                "end_timestamp": end,
                "ms": ms,
                "wait_ms": wait if at is None else 0,
                "overhead_ms": max(0, ms - wait) if at is None else 0,
                "lag_ms": timing.lag_ms if at is None else 0,
                "total_ms": max(0, end - submitted_ms),
                "step_count": count,
                "vars": snapshot,
                "appended": draft.appended,
                "request": request,
                "response": draft.response,
                "cost": draft.cost,
                "revenue": draft.revenue,
                "cap_reached": draft.cap_reached,
                "ping_limit_reached": draft.ping_limit_reached,
                "module_id": draft.module_id,
                # The engine's package version (importlib.metadata) with the module that ran.
                "package_version": who.handler_version if draft.module_id else None,
                "acceptance_criteria": draft.acceptance_criteria,
                "attempt": attempt,
                "retry_status": draft.retry_status,
                "circuit_breaker_state": draft.circuit_breaker_state,
                "key": draft.key,
                "expires_at": end + who.retention_ms,
                "version": EVENT_SCHEMA_VERSION,
                "handler_version": who.handler_version,
                "host": who.host,
                "firehose": context.firehose,
                "flow_ping_limits": context.flow_ping_limits,
                "source_ping_limits": context.source_ping_limits,
                "client_ip": draft.client_ip,
                "source_config_version": draft.source_config_version,
                "rule_set": draft.rule_set,
                "rules_evaluated": draft.rules_evaluated,
                "rule_results": draft.rule_results,
                "failed_values": draft.failed_values,
                "would_have_destination": draft.would_have_destination,
                "retry_attempts": draft.retry_attempts,
                "timeout_ms": draft.timeout_ms,
                "timed_out": draft.timed_out,
                "metrics_changed": draft.metrics_changed,
                "field_errors": draft.field_errors,
                "original_failure": draft.original_failure,
            }
        )
    return events
