"""Source acceptance: parse the submission, type its fields, check acceptance criteria.

Records ``source.submitted`` (the raw data, before any parsing) and then
``source.accepted`` (typed fields, cost assigned) or ``source.rejected`` with a
reason a source can act on, e.g. ``Missing required field: email`` or
``Acceptance criteria not met: Adult: lead.age is 16``.

Only declared fields reach the accepted snapshot, under ``lead.<name>`` and
their parsed components: a submitted ``outcome``, ``appended.x`` or
``email.valid`` stays in ``source.submitted``'s raw record and goes no further.
A masked type (an SSN) is masked in ``source.submitted`` too, request included.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, ValidationInfo, field_validator, model_validator

from engine.caps import CapSpec
from engine.fields import COMPONENTS, MASKED_TYPES, PARSERS, Scalar
from engine.intake.bodies import decode_body
from engine.intake.config import IntakeSettings
from engine.model import ConfigModel
from engine.steps.base import (
    TOTAL_COST,
    TOTAL_DELIVERED,
    TOTAL_REVENUE,
    EventDraft,
    Snapshot,
    StepResult,
)
from engine.steps.rules import RuleSet, referenced_fields

MAX_RAW_VALUE = 4096
# source.submitted keeps what was sent, within bounds: its event must still fit
# in a Kafka message however many keys a source invents.
MAX_RAW_FIELDS = 256
MAX_RAW_KEY = 128
MAX_REQUEST_BODY = 65536

FieldType = Literal[
    "string",
    "email",
    "phone",
    "state",
    "postal_code",
    "boolean",
    "number",
    "date",
    "datetime",
    "ssn",
]
_BASE_VARS = ("lead.id", "submission.timestamp", "flow.id", "flow.name", "source.id", "source.name")
# A 3-2-4 digit run: how an SSN is masked in a body that is not JSON.
_SSN_LIKE = re.compile(r"(?<!\d)\d{3}[-. ]?\d{2}[-. ]?(\d{4})(?!\d)")


class FieldSpec(ConfigModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    type: FieldType = "string"
    required: bool = False


class SourceSettings(ConfigModel):
    fields: list[FieldSpec]
    cost: float = 0.0
    caps: list[CapSpec] = Field(default_factory=list)
    # Reject a lead whose duplicate_fields match a lead accepted within the window.
    duplicate_window_days: Annotated[int, Field(ge=1, le=365)] | None = None
    duplicate_fields: list[str] = Field(default_factory=lambda: ["email", "phone_1"])
    # Judged on the typed snapshot (whatever of it was typed: a rejected lead's too).
    acceptance: RuleSet | None = None
    # Leads POSTed over HTTP (engine.api.intake); None: the intake topic only.
    intake: IntakeSettings | None = None

    @model_validator(mode="after")
    def _fields_are_distinct(self) -> SourceSettings:
        names = [spec.name for spec in self.fields]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"field names must be unique, repeated: {', '.join(repeated)}")
        if "id" in names:
            raise ValueError("'id' is reserved: lead.id is the lead's own id")
        return self

    @field_validator("acceptance")
    @classmethod
    def _acceptance_reads_known_fields(
        cls, acceptance: RuleSet | None, info: ValidationInfo
    ) -> RuleSet | None:
        # Acceptance runs before any enhancement, on base and typed fields only: a
        # rule on anything else (a typo, appended.*) could never see a value.
        fields: list[FieldSpec] | None = info.data.get("fields")
        if acceptance is None or fields is None:  # no fields: already reported as invalid
            return acceptance
        known = set(_BASE_VARS)
        for spec in fields:
            known.add(f"lead.{spec.name}")
            known.update(f"lead.{spec.name}.{c}" for c in COMPONENTS[spec.type])
        if unknown := sorted(set(referenced_fields(acceptance.rules)) - known):
            raise ValueError(
                f"acceptance rules read {', '.join(unknown)}, which this source never sets "
                "(acceptance sees lead.<field>, its components and submission/flow/source vars)"
            )
        return acceptance

    @cached_property
    def config_version(self) -> str:
        """16 hex chars of SHA-256 over the settings' canonical JSON: changes exactly when
        the source's configuration does (a flow version may change other steps only)."""
        canonical = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Submission:
    body: bytes
    lead_id: str
    submitted_ms: int
    flow_id: str
    flow_name: str
    source_id: str
    source_name: str
    content_type: str = "application/json"
    # A lead POSTed over HTTP: method, uri and headers (credentials masked) as received.
    http_request: dict[str, Any] | None = None
    # The price a ping offered for this lead (ping/post): it replaces the source's cost.
    price: float | None = None
    # The ping this lead was posted for, and the client's address (HTTP intake only).
    ping_id: str | None = None
    client_ip: str | None = None


_PII = "pii"  # a field the source's intake settings mask, whatever its type


def _masked_names(settings: SourceSettings) -> dict[str, str]:
    """Field name -> masked type, for the fields a source must never see stored."""
    names: dict[str, str] = {
        spec.name: spec.type for spec in settings.fields if spec.type in MASKED_TYPES
    }
    if settings.intake is not None:
        names.update((name.lower(), _PII) for name in settings.intake.mask if name not in names)
    return names


def _masked(key: str, value: Any, masked: dict[str, str]) -> Any:
    # Matched however the source spells the key ("SSN ", "Ssn"): the value is no
    # less sensitive for being sent under an unexpected spelling.
    kind = masked.get(key.strip().lower()) if masked else None
    if kind == _PII:
        return "[masked]" if value not in (None, "") else value
    return value if kind is None else PARSERS[kind](value).value


def _raw_vars(data: dict[str, Any], masked: dict[str, str]) -> Snapshot:
    """The submitted values as they came, for source.submitted; structures are
    kept as JSON text so the snapshot stays flat, masked types are masked."""
    out: Snapshot = {}
    for key, value in islice(data.items(), MAX_RAW_FIELDS):
        shown = _masked(key, value, masked)
        name = f"lead.{key[:MAX_RAW_KEY]}"
        if isinstance(shown, bool | int | float | str) or shown is None:
            out[name] = shown[:MAX_RAW_VALUE] if isinstance(shown, str) else shown
        else:
            out[name] = orjson.dumps(shown).decode()[:MAX_RAW_VALUE]
    return out


def _request_body(sub: Submission, data: Any, masked: dict[str, str]) -> str:
    """The body as received, unless the source takes a masked type: then the JSON is
    rewritten with those values masked, and a body that is not JSON has its
    SSN-shaped digit runs masked (best effort: it cannot be parsed)."""
    if not masked:
        return sub.body[:MAX_REQUEST_BODY].decode("utf-8", errors="replace")
    if isinstance(data, dict):
        clean = {key: _masked(key, value, masked) for key, value in data.items()}
        return orjson.dumps(clean).decode()[:MAX_REQUEST_BODY]
    text = sub.body.decode("utf-8", errors="replace")
    return _SSN_LIKE.sub(r"***-**-\1", text)[:MAX_REQUEST_BODY]


def _base_vars(sub: Submission) -> Snapshot:
    return {
        "lead.id": sub.lead_id,
        "submission.timestamp": sub.submitted_ms,
        "flow.id": sub.flow_id,
        "flow.name": sub.flow_name,
        "source.id": sub.source_id,
        "source.name": sub.source_name,
    }


def _ping_limit_reached(sub: Submission, settings: SourceSettings) -> bool | None:
    """False for a lead posted for a ping of a source with ping limits: the limits were
    evaluated on that ping and admitted it (a ping over a limit gets no price to post
    for). None otherwise: no limit was evaluated for this lead."""
    ping = settings.intake.ping if settings.intake is not None else None
    if sub.ping_id is None or ping is None or not ping.limits:
        return None
    return False


def _criteria(settings: SourceSettings, typed: Snapshot | None) -> dict[str, Any] | None:
    return settings.acceptance.criteria(typed) if settings.acceptance is not None else None


def _field_error(field: str | None, check: str, message: str) -> dict[str, Any]:
    """One failed validation as events record it (the schema's ``FieldError``)."""
    return {"field": field, "check": check, "message": message}


def _unmet_field(criteria: dict[str, Any] | None) -> str | None:
    """The field the first failed acceptance rule read (None: several, or none named)."""
    for rule in (criteria or {}).get("rules", []):
        if rule.get("passed") is False:
            names = sorted(rule.get("failed_values") or {})
            return names[0].removeprefix("lead.") if len(names) == 1 else None
    return None


def accept_submission(sub: Submission, settings: SourceSettings) -> StepResult:
    result = _accept(sub, settings)
    # What every source event says about the submission, whatever the verdict.
    reached = _ping_limit_reached(sub, settings)
    for draft in result.events:
        draft.client_ip = sub.client_ip
        draft.source_config_version = settings.config_version
        draft.ping_limit_reached = reached
    return result


def _accept(sub: Submission, settings: SourceSettings) -> StepResult:
    base = _base_vars(sub)
    not_evaluated = _criteria(settings, None)
    masked = _masked_names(settings)
    problem: str | None
    decoded = decode_body(sub.body, sub.content_type)
    data, problem = (None, decoded.reason) if not isinstance(decoded, dict) else (decoded, None)

    request = {
        "method": "POST",
        "uri": f"kafka://intake/{sub.flow_id}",
        "headers": {"content-type": sub.content_type},
        **(sub.http_request or {}),
        "body": _request_body(sub, data, masked),
    }
    raw_vars = _raw_vars(data, masked) if isinstance(data, dict) else {}
    submitted = EventDraft(
        type="source.submitted",
        outcome="success",
        vars={**raw_vars, **base},  # a submitted "id" must not pass for the lead's id
        entity_id=sub.source_id,
        request=request,
        acceptance_criteria=not_evaluated,
        # Stamped at the lead's arrival (the HTTP intake's, or the intake record's time),
        # before any parsing: source.accepted - source.submitted is the parsing time.
        at_ms=sub.submitted_ms,
    )
    if problem is not None or not isinstance(data, dict):
        rejected = EventDraft(
            "source.rejected",
            "failure",
            problem,
            vars=dict(base),
            entity_id=sub.source_id,
            acceptance_criteria=not_evaluated,
            field_errors=[_field_error(None, "body", problem or "Unreadable body")],
        )
        return StepResult([submitted, rejected], proceed=False)

    typed: Snapshot = dict(base)
    problems: list[dict[str, Any]] = []
    for spec in settings.fields:
        raw = data.get(spec.name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if spec.required:
                message = f"Missing required field: {spec.name}"
                problems.append(_field_error(spec.name, "required", message))
            continue
        parsed = PARSERS[spec.type](raw)
        typed[f"lead.{spec.name}"] = parsed.value
        for component, value in parsed.components.items():
            typed[f"lead.{spec.name}.{component}"] = value
        if parsed.problem and spec.required:
            message = f"Invalid {spec.name}: {parsed.problem}"
            problems.append(_field_error(spec.name, "type", message))

    # The criteria are judged on whatever was typed, so a rejected lead's event says which
    # of them it met as well as which fields failed; a rule failed only because its field
    # did (``age`` missing, so ``age >= 18`` fails) is not a second error.
    criteria = not_evaluated
    if settings.acceptance is not None:
        criteria = _criteria(settings, typed)
        unmet = settings.acceptance.check(typed)
        field = _unmet_field(criteria)
        if unmet is not None and (field is None or field not in {p["field"] for p in problems}):
            message = f"Acceptance criteria not met: {unmet}"
            problems.append(_field_error(field, "acceptance", message))
    if problems:
        rejected = EventDraft(
            "source.rejected",
            "failure",
            "; ".join(p["message"] for p in problems),
            vars=typed,
            entity_id=sub.source_id,
            acceptance_criteria=criteria,
            field_errors=problems,
        )
        return StepResult([submitted, rejected], proceed=False)

    cost = settings.cost if sub.price is None else sub.price
    totals: dict[str, Scalar] = {TOTAL_COST: cost, TOTAL_REVENUE: 0.0, TOTAL_DELIVERED: 0}
    accepted = EventDraft(
        "source.accepted",
        "success",
        vars={**typed, **totals},
        entity_id=sub.source_id,
        cost=cost,
        acceptance_criteria=criteria,
    )
    return StepResult([submitted, accepted], proceed=True)
