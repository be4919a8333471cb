"""Flow definitions: what steps a lead goes through, as validated data.

A flow is YAML on disk, validated by pydantic; a mistake is reported with the
file, the line and the field, before any worker runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from engine.alerts.rules import AlertRule
from engine.caps import CapSpec
from engine.destinations import Destination
from engine.errors import FlowConfigError
from engine.export_schedules import FlowScheduledExport
from engine.model import ConfigModel
from engine.sealing import ALWAYS_SENSITIVE
from engine.steps.auction import AuctionSettings
from engine.steps.enhancement import EnhancementSettings
from engine.steps.filter import FilterSettings
from engine.steps.recipient import RecipientSettings
from engine.steps.source import SourceSettings

SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Source field types that hold PII, whatever the field is called.
PII_TYPES = frozenset({"email", "phone", "ssn"})


class _Step(ConfigModel):
    id: Annotated[str, Field(pattern=SLUG)]
    name: str


class SourceStep(_Step):
    kind: Literal["source"]
    settings: SourceSettings


class FilterStep(_Step):
    kind: Literal["filter"]
    settings: FilterSettings


class RecipientStep(_Step):
    kind: Literal["recipient"]
    settings: RecipientSettings


class EnhancementStep(_Step):
    kind: Literal["enhancement"]
    settings: EnhancementSettings


class AuctionStep(_Step):
    kind: Literal["auction"]
    settings: AuctionSettings


Step = Annotated[
    SourceStep | EnhancementStep | FilterStep | RecipientStep | AuctionStep,
    Field(discriminator="kind"),
]


class TopicSettings(ConfigModel):
    partitions: Annotated[int, Field(ge=1, le=1000)] = 3
    replication: Annotated[int, Field(ge=1, le=5)] = 1


class Flow(ConfigModel):
    id: Annotated[str, Field(pattern=SLUG)]
    name: str
    version: Annotated[int, Field(ge=1)] = 1
    topics: TopicSettings = TopicSettings()
    steps: Annotated[list[Step], Field(min_length=1, max_length=200)]
    destinations: list[Destination] = Field(default_factory=list)
    # The flow's events exported on a schedule (projectors.exports.scheduler).
    exports: Annotated[list[FlowScheduledExport], Field(max_length=100)] = Field(
        default_factory=list
    )
    caps: list[CapSpec] = Field(default_factory=list)
    # Multi-buyer path: stop at the first recipient that accepts, or offer every buyer.
    stop_at_first_delivery: bool = False
    # How long the flow's data is kept everywhere (engine.retention): its events'
    # ``expires_at``, its topics' ``retention.ms``, the timeline's partitions, the state
    # tables, export files and objects. Days, fractions allowed (a test runs on minutes).
    retention_days: Annotated[float, Field(gt=0, le=3650)] = 90
    # Lead fields sealed (encrypted under the lead's own key, engine.sealing) before they
    # reach any topic. Declaring any turns sealing on for the flow; SSNs and dates of
    # birth are then sealed too, declared or not. Every process of the flow then needs
    # the master key (LEADFLOW_MASTER_KEY or LEADFLOW_MASTER_KEY_FILE).
    sensitive_fields: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = Field(
        default_factory=list
    )
    # Rules evaluated continuously on the flow's events (engine.alerts; the `alerts:<flow>`
    # role runs them): alert events, webhooks, and a bad source's cap lowered.
    alerts: list[AlertRule] = Field(default_factory=list)

    @property
    def retention_ms(self) -> int:
        """``retention_days`` in milliseconds (what Kafka and ``expires_at`` count in)."""
        return round(self.retention_days * 86_400_000)

    @property
    def seals(self) -> bool:
        """Whether this flow's sensitive fields are sealed (it declares some)."""
        return bool(self.sensitive_fields)

    @property
    def sensitive(self) -> frozenset[str]:
        """The field names sealed: declared, SSN-typed, and the always-sensitive names."""
        source = self.steps[0].settings
        typed = {f.name for f in getattr(source, "fields", []) if f.type == "ssn"}
        return frozenset(self.sensitive_fields) | typed | ALWAYS_SENSITIVE

    @model_validator(mode="after")
    def _shape(self) -> Flow:
        if self.steps[0].kind != "source":
            raise ValueError("the first step must be the source")
        if any(s.kind == "source" for s in self.steps[1:]):
            raise ValueError("only the first step may be a source")
        if any(s.id == "feedback" for s in self.steps):
            raise ValueError("step id 'feedback' is reserved for buyer feedback events")
        ids = [s.id for s in self.steps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique, repeated: {', '.join(dupes)}")
        self._pings_without_pii()
        self._alerts_name_steps()
        exports = [e.id for e in self.exports]
        if len(set(exports)) != len(exports):
            raise ValueError("scheduled exports' ids must be unique")
        keys = [d.key for d in self.destinations]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(
                f"destinations must differ (give each an id), repeated: {', '.join(twice)}"
            )
        return self

    def _pings_without_pii(self) -> None:
        """An auction's pings go to buyers who have not paid: a field the source types as
        an email, a phone or an SSN, or one the flow seals, may not be in them, whatever
        its name (names that say PII are refused with the buyer's settings)."""
        source = self.steps[0].settings
        typed = {f.name for f in getattr(source, "fields", []) if f.type in PII_TYPES}
        private = typed | set(self.sensitive_fields)
        for step in self.steps:
            if not isinstance(step, AuctionStep):
                continue
            for buyer in step.settings.buyers:
                pii = sorted(private.intersection(buyer.ping_fields))
                if pii:
                    raise ValueError(
                        f"steps.{step.id} buyer {buyer.id}: ping_fields may not carry PII:"
                        f" {', '.join(pii)}"
                    )

    def _alerts_name_steps(self) -> None:
        """A rule watches steps of the kind its metric is about, and a source's cap can be
        lowered only where the source has one."""
        ids = [r.id for r in self.alerts]
        if twice := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"alert ids must be unique, repeated: {', '.join(twice)}")
        kinds = {
            "source_rejection_rate": ("source",),
            "buyer_acceptance": ("recipient",),
            "avg_step_ms": ("source", "enhancement", "filter", "recipient", "auction"),
            "rejection_rate": (),
        }
        by_id = {s.id: s for s in self.steps}
        for rule in self.alerts:
            wanted = kinds[rule.metric]
            for step_id in rule.steps:
                step = by_id.get(step_id)
                if step is None or step.kind not in wanted:
                    raise ValueError(
                        f"alerts.{rule.id}: {rule.metric} watches {' or '.join(wanted) or 'no'}"
                        f" steps; {step_id} is {'no step' if step is None else step.kind}"
                    )
            source = self.steps[0].settings
            if rule.lower_source_cap is not None and not getattr(source, "caps", None):
                raise ValueError(
                    f"alerts.{rule.id}: lower_source_cap needs caps on the source step to lower"
                )

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def index(self, step_id: str) -> int:
        return [s.id for s in self.steps].index(step_id)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the YAML node tree along a pydantic error location to find its line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            continue  # discriminator tags such as 'filter' are not in the document
        node = child
        line = node.start_mark.line + 1
    return line


def parse_flow(text: str, path: str = "<flow>") -> Flow:
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. an impossible date
        raise FlowConfigError(path, [f"not valid YAML: {exc}"]) from exc
    try:
        return Flow.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc) or "(flow)"
            line = _line_of(tree, loc)
            prefix = f"line {line}: " if line else ""
            problems.append(f"{prefix}{where}: {err['msg']}")
        raise FlowConfigError(path, problems) from None


def load_flow(path: Path) -> Flow:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowConfigError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    return parse_flow(text, str(path))
