"""Flow definitions: what steps a lead goes through, as validated data.

A flow is YAML on disk, validated by pydantic; a mistake is reported with the
file, the line and the field, before any worker runs it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from engine.errors import FlowConfigError

SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


FieldType = Literal["string", "email", "phone", "state", "postal_code", "boolean", "number"]


class FieldSpec(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    type: FieldType = "string"
    required: bool = False


class SourceSettings(_Model):
    fields: list[FieldSpec]
    cost: float = 0.0


class Rule(_Model):
    field: str
    op: Literal[
        "equals", "not_equals", "in", "not_in", "exists", "not_exists", "regex", "gte", "lte"
    ]
    value: Any = None
    name: str | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Rule:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op == "regex":
            if not isinstance(self.value, str):
                raise ValueError("op 'regex' needs a pattern string")
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(f"bad regex {self.value!r}: {exc}") from exc
        if self.op in ("gte", "lte") and not isinstance(self.value, int | float):
            raise ValueError(f"op {self.op!r} needs a number")
        return self


class FilterSettings(_Model):
    rules: Annotated[list[Rule], Field(min_length=1)]
    match: Literal["all", "any"] = "all"


class AcceptRule(_Model):
    path: str = "outcome"
    value: Any = "success"


class RecipientSettings(_Model):
    url: HttpUrl
    format: Literal["json", "form"] = "json"
    timeout_ms: Annotated[int, Field(gt=0, le=120_000)] = 5000
    mapping: dict[str, str] = Field(default_factory=dict)
    accept: AcceptRule = AcceptRule()
    reason_path: str = "reason"
    price_path: str | None = "price"
    id_path: str | None = "id"


class _Step(_Model):
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


Step = Annotated[SourceStep | FilterStep | RecipientStep, Field(discriminator="kind")]


class TopicSettings(_Model):
    partitions: Annotated[int, Field(ge=1, le=1000)] = 3
    replication: Annotated[int, Field(ge=1, le=5)] = 1


class Destination(_Model):
    kind: Literal["s3", "azure_blob"]
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    prefix: str = ""
    enabled: bool = True

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.bucket}/{self.prefix}"


class Flow(_Model):
    id: Annotated[str, Field(pattern=SLUG)]
    name: str
    version: Annotated[int, Field(ge=1)] = 1
    topics: TopicSettings = TopicSettings()
    steps: Annotated[list[Step], Field(min_length=1, max_length=200)]
    destinations: list[Destination] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> Flow:
        if self.steps[0].kind != "source":
            raise ValueError("the first step must be the source")
        if any(s.kind == "source" for s in self.steps[1:]):
            raise ValueError("only the first step may be a source")
        ids = [s.id for s in self.steps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique, repeated: {', '.join(dupes)}")
        return self

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
    except yaml.YAMLError as exc:
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
