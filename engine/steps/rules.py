"""The rule language of filters and acceptance criteria: validated, compiled once, explained.

A failed rule set says which rule failed and the value that failed it. As
written in a flow file::

    rules:                              # combined by `match: all` (default) or `any`
      - {name: Service area, field: lead.state, op: in, value: [TX, CA]}
      - any:                            # groups (all, any, not) nest to any depth
          - {field: lead.age, op: range, min: 18, max: 65}
          - not: {field: lead.email.domain, op: ends_with, value: .gov, ignore_case: true}
      - {name: Office hours, op: time_of_day, from: "09:00", to: "17:00",
         time_zone: America/Chicago}    # field defaults to submission.timestamp

Rules are validated and compiled when the flow is loaded (patterns, time
zones, value sets), so a lead only runs prepared predicates. Times and dates
are judged against the lead's own submission time, never the wall clock, so a
replayed lead gets the same decision.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import re2
from pydantic import ConfigDict, Field, field_validator, model_validator

from engine.fields import as_number, format_moment, moment_from_epoch_ms, read_moment
from engine.model import ConfigModel
from engine.steps.base import Snapshot

Op = Literal[
    "equals",
    "not_equals",
    "in",
    "not_in",
    "range",
    "between",
    "gte",
    "gt",
    "lte",
    "lt",
    "exists",
    "not_exists",
    "regex",
    "contains",
    "starts_with",
    "ends_with",
    "time_of_day",
    "day_of_week",
    "before",
    "after",
    "older_than",
    "newer_than",
]
SUBMITTED_AT = "submission.timestamp"
_TIME_OPS = frozenset({"time_of_day", "day_of_week"})
_TEXT_OPS = frozenset({"regex", "contains", "starts_with", "ends_with"})
_NUMBER_OPS = frozenset({"gte", "gt", "lte", "lt"})
_LEAF_KEYS = ("value", "min", "max", "from_", "to", "days", "time_zone", "ignore_case")


def _keys(needs: str, may: str = "") -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(needs.split()), frozenset(may.split())


# op -> (keys it needs, keys it may take besides field and op)
_OP_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    **dict.fromkeys(["equals", "not_equals", "in", "not_in"], _keys("value", "ignore_case")),
    **dict.fromkeys(["range", "between"], _keys("", "min max")),
    **dict.fromkeys(_NUMBER_OPS, _keys("value")),
    **dict.fromkeys(["exists", "not_exists"], _keys("")),
    **dict.fromkeys(_TEXT_OPS, _keys("value", "ignore_case")),
    "time_of_day": _keys("from_ to time_zone"),
    "day_of_week": _keys("value time_zone"),
    **dict.fromkeys(["before", "after"], _keys("value", "time_zone")),
    **dict.fromkeys(["older_than", "newer_than"], _keys("days", "time_zone")),
}
_HH_MM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NUMBERS = {
    **{short: n for n, short in enumerate(_DAYS)},
    **{
        full: n
        for n, full in enumerate(
            ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        )
    },
}
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # not a bool, not "18"


def _key_name(key: str) -> str:
    return key.rstrip("_")  # from_ and not_ are 'from' and 'not' in a flow file


class Rule(ConfigModel):
    """A condition on one snapshot field (``field`` + ``op``), or a group: ``all``,
    ``any`` (lists of rules) or ``not`` (one rule). ``name`` labels either in reasons."""

    # Dumps say 'from' and 'not', as flow files do, so a dumped flow validates again.
    model_config = ConfigDict(serialize_by_alias=True)

    name: str | None = None
    field: Annotated[str, Field(pattern=r"^\S+$")] | None = None
    op: Op | None = None
    value: Any = None
    min: Number | None = None
    max: Number | None = None
    from_: str | int | None = Field(default=None, alias="from")
    to: str | int | None = None
    days: Annotated[int, Field(ge=0)] | None = None
    time_zone: str | None = None
    ignore_case: bool | None = None
    all: list[Rule] | None = None
    any: list[Rule] | None = None
    not_: Rule | None = Field(default=None, alias="not")

    @model_validator(mode="before")
    @classmethod
    def _times_default_to_submission(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("op") in _TIME_OPS and data.get("field") is None:
            return {**data, "field": SUBMITTED_AT}
        return data

    @field_validator("value", mode="before")
    @classmethod
    def _dates_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2024-01-15 as a date; snapshots hold dates as ISO text.
        if isinstance(value, list):
            return [format_moment(v) if isinstance(v, date) else v for v in value]
        return format_moment(value) if isinstance(value, date) else value

    @field_validator("from_", "to")
    @classmethod
    def _clock_time(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int):
            hours, minutes = divmod(value, 60)
            raise ValueError(
                f"YAML reads an unquoted {hours}:{minutes:02d} as the number {value}; "
                f"write times in quotes, e.g. '{hours:02d}:{minutes:02d}'"
            )
        if value is not None and not _HH_MM.fullmatch(value):
            raise ValueError(f"expected a time as HH:MM (00:00 to 23:59), got {value!r}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            _zone(value)
        return value

    @model_validator(mode="after")
    def _well_formed(self) -> Rule:
        groups = [k for k in ("all", "any", "not_") if getattr(self, k) is not None]
        given = {k for k in _LEAF_KEYS if getattr(self, k) is not None}
        if groups:
            named = {k for k in ("field", "op") if getattr(self, k) is not None}
            leaf = sorted(_key_name(k) for k in given | named)
            if len(groups) > 1 or leaf:
                both = ", ".join(sorted(_key_name(k) for k in groups) + leaf)
                raise ValueError(
                    "a rule is either a condition (field, op, ...) or one group "
                    f"(all, any or not), not both: got {both}"
                )
            if self.not_ is None and not (self.all or self.any):
                raise ValueError(f"'{groups[0]}' needs at least one rule")
            return self
        if self.op is None:
            raise ValueError("a rule needs 'op' and 'field', or is a group: all, any or not")
        if self.field is None:
            raise ValueError(f"op {self.op!r} needs 'field'")
        needs, may = _OP_KEYS[self.op]
        if missing := sorted(_key_name(k) for k in needs - given):
            raise ValueError(f"op {self.op!r} needs {' and '.join(map(repr, missing))}")
        if extra := sorted(_key_name(k) for k in given - needs - may):
            raise ValueError(f"op {self.op!r} does not take {', '.join(map(repr, extra))}")
        _leaf(self)  # op-specific checks: patterns compile, values have the right types
        return self


class RuleSet(ConfigModel):
    """Rules combined by ``match``; compiled once, then judged per lead by ``check``."""

    rules: Annotated[list[Rule], Field(min_length=1)]
    match: Literal["all", "any"] = "all"

    @model_validator(mode="after")
    def _compile_now(self) -> RuleSet:
        _ = self.compiled  # at load, not on the first lead
        return self

    @cached_property
    def compiled(self) -> CompiledRules:
        # A cached_property, not a private attribute: pydantic leaves it out of ==.
        return CompiledRules.of(self)

    def _current(self) -> CompiledRules:
        compiled = self.compiled
        # model_copy(update=...) copies cached values without validating: recompile
        # when the rules are no longer the ones compiled (an identity check, so cheap).
        if compiled.rules is not self.rules or compiled.match != self.match:
            compiled = self.__dict__["compiled"] = CompiledRules.of(self)
        return compiled

    def check(self, snapshot: Snapshot) -> str | None:
        """None when the snapshot satisfies the rules, else why not, e.g.
        ``Service area: lead.state is 'WY'``."""
        condition = self._current().condition
        if condition.holds(snapshot):
            return None
        if isinstance(condition, _AnyOf):
            return "No rule matched: " + "; ".join(c.explain(snapshot) for c in condition.children)
        return condition.explain(snapshot)

    def as_json(self) -> str:
        """The rules as JSON text (what events recorded as ``acceptance_criteria`` before
        schema v5)."""
        return self._current().as_json

    def judge(self, snapshot: Snapshot) -> tuple[str | None, list[dict[str, Any]]]:
        """``check`` and ``results`` at once, judging the rules once when the lead passes
        them all (the filter's hot path)."""
        compiled = self._current()
        if compiled.match == "all" and compiled.condition.holds(snapshot):
            return None, list(compiled.all_passed)
        return self.check(snapshot), self.results(snapshot)

    def results(self, snapshot: Snapshot | None) -> list[dict[str, Any]]:
        """Each top-level rule judged on ``snapshot`` (the schema's ``RuleResult``): its
        label, its definition as JSON, whether it passed, and when it failed the fields it
        read with their values. ``snapshot`` None: the rules were not evaluated (the lead
        was rejected before them), so every ``passed`` is None."""
        compiled = self._current()
        if snapshot is not None and compiled.match == "all" and compiled.condition.holds(snapshot):
            # Most leads pass every rule: the same results each time, built once.
            return list(compiled.all_passed)
        out = []
        for condition, rule_json in zip(
            compiled.condition.children, compiled.rule_json, strict=True
        ):
            passed = None if snapshot is None else condition.holds(snapshot)
            failed = condition.values(snapshot) if snapshot is not None and not passed else {}
            out.append(
                {
                    "name": condition.label,
                    "rule": rule_json,
                    "passed": passed,
                    "failed_values": failed,
                }
            )
        return out

    def criteria(self, snapshot: Snapshot | None) -> dict[str, Any]:
        """The rule set and its results as events record acceptance criteria (the schema's
        ``AcceptanceCriteria``)."""
        results = self.results(snapshot)
        passed = None if snapshot is None else self._current().condition.holds(snapshot)
        return {"match": self.match, "passed": passed, "rules": results}


@dataclass(frozen=True, slots=True)
class CompiledRules:
    rules: list[Rule]  # the very list compiled, to notice a model_copy(update=...)
    match: str
    condition: _AllOf | _AnyOf
    as_json: str
    rule_json: tuple[str, ...]  # each top-level rule as JSON, for its result on events
    # Every rule's result for a lead that passes them all (read-only: shared by events).
    all_passed: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, rule_set: RuleSet) -> CompiledRules:
        children = tuple(_compile(rule) for rule in rule_set.rules)
        top = _AllOf(children, None) if rule_set.match == "all" else _AnyOf(children, None)
        dumped = [r.model_dump(mode="json", exclude_none=True) for r in rule_set.rules]
        as_json = orjson.dumps({"match": rule_set.match, "rules": dumped}).decode()
        rule_json = tuple(orjson.dumps(d).decode() for d in dumped)
        all_passed = tuple(
            {"name": c.label, "rule": j, "passed": True, "failed_values": {}}
            for c, j in zip(children, rule_json, strict=True)
        )
        return cls(rule_set.rules, rule_set.match, top, as_json, rule_json, all_passed)


def referenced_fields(rules: list[Rule]) -> Iterator[str]:
    """Every snapshot field the rules read, groups included."""
    for rule in rules:
        if rule.field is not None:
            yield rule.field
        yield from referenced_fields([*(rule.all or ()), *(rule.any or ())])
        if rule.not_ is not None:
            yield from referenced_fields([rule.not_])


# --- compiled conditions ---------------------------------------------------------
# holds() is the hot path: plain attribute reads and prepared predicates. explain()
# runs only for a lead that failed, to say why.


class _Missing:
    def __repr__(self) -> str:
        return "missing"


MISSING = _Missing()
Test = Callable[[Any, Snapshot], bool]  # (the field's value or MISSING, the snapshot)
Show = Callable[[Any, Snapshot], str]


def _shown(value: Any, _snapshot: Snapshot | None = None) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # number fields are floats: say 42, not 42.0
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class _Leaf:
    field: str
    label: str
    test: Test
    show: Show

    def holds(self, snapshot: Snapshot) -> bool:
        return self.test(snapshot.get(self.field, MISSING), snapshot)

    def facts(self, snapshot: Snapshot) -> list[str]:
        return [f"{self.field} is {self.show(snapshot.get(self.field, MISSING), snapshot)}"]

    def values(self, snapshot: Snapshot) -> dict[str, str]:
        return {self.field: self.show(snapshot.get(self.field, MISSING), snapshot)}

    def explain(self, snapshot: Snapshot) -> str:
        return f"{self.label}: {self.facts(snapshot)[0]}"


@dataclass(frozen=True, slots=True)
class _AllOf:
    children: tuple[_Condition, ...]
    name: str | None

    @property
    def label(self) -> str:
        return self.name or "all of (" + ", ".join(c.label for c in self.children) + ")"

    def holds(self, snapshot: Snapshot) -> bool:
        return all(child.holds(snapshot) for child in self.children)

    def facts(self, snapshot: Snapshot) -> list[str]:
        return _facts(self.children, snapshot)

    def values(self, snapshot: Snapshot) -> dict[str, str]:
        return _values(self.children, snapshot)

    def explain(self, snapshot: Snapshot) -> str:
        failed = next(c for c in self.children if not c.holds(snapshot))
        return f"{self.name}: {failed.explain(snapshot)}" if self.name else failed.explain(snapshot)


@dataclass(frozen=True, slots=True)
class _AnyOf:
    children: tuple[_Condition, ...]
    name: str | None

    @property
    def label(self) -> str:
        return self.name or "any of (" + ", ".join(c.label for c in self.children) + ")"

    def holds(self, snapshot: Snapshot) -> bool:
        return any(child.holds(snapshot) for child in self.children)

    def facts(self, snapshot: Snapshot) -> list[str]:
        return _facts(self.children, snapshot)

    def values(self, snapshot: Snapshot) -> dict[str, str]:
        return _values(self.children, snapshot)

    def explain(self, snapshot: Snapshot) -> str:
        reasons = "; ".join(c.explain(snapshot) for c in self.children)
        return f"{self.name + ': ' if self.name else ''}none of ({reasons})"


@dataclass(frozen=True, slots=True)
class _Not:
    child: _Condition
    name: str | None

    @property
    def label(self) -> str:
        return self.name or f"not ({self.child.label})"

    def holds(self, snapshot: Snapshot) -> bool:
        return not self.child.holds(snapshot)

    def facts(self, snapshot: Snapshot) -> list[str]:
        return self.child.facts(snapshot)

    def values(self, snapshot: Snapshot) -> dict[str, str]:
        return self.child.values(snapshot)

    def explain(self, snapshot: Snapshot) -> str:
        return f"{self.label}: {', '.join(self.facts(snapshot))}"


_Condition = _Leaf | _AllOf | _AnyOf | _Not


def _facts(children: tuple[_Condition, ...], snapshot: Snapshot) -> list[str]:
    return list(dict.fromkeys(fact for c in children for fact in c.facts(snapshot)))


def _values(children: tuple[_Condition, ...], snapshot: Snapshot) -> dict[str, str]:
    """The fields a group's rules read and their values as reasons show them; in a group
    that failed, only its failed rules' (an ``all`` failed by one of three names one)."""
    failed = [c for c in children if not c.holds(snapshot)] or list(children)
    return {k: v for c in failed for k, v in c.values(snapshot).items()}


def _compile(rule: Rule) -> _Condition:
    if rule.all is not None:
        return _AllOf(tuple(_compile(r) for r in rule.all), rule.name)
    if rule.any is not None:
        return _AnyOf(tuple(_compile(r) for r in rule.any), rule.name)
    if rule.not_ is not None:
        return _Not(_compile(rule.not_), rule.name)
    return _leaf(rule)


# --- operators -------------------------------------------------------------------


def _leaf(rule: Rule) -> _Leaf:
    """Prepare one condition; a ValueError here refuses the flow at load."""
    assert rule.op is not None and rule.field is not None  # checked by Rule._well_formed
    op = rule.op
    show: Show = _shown
    if op in ("equals", "not_equals", "in", "not_in"):
        wanted = rule.value if op in ("in", "not_in") else [rule.value]
        if op in ("in", "not_in") and not isinstance(rule.value, list):
            raise ValueError(f"op {op!r} needs a list 'value'")
        test = _member_of(wanted, bool(rule.ignore_case), op)
        if op.startswith("not_"):
            test = _negated(test)
    elif op in ("range", "between"):
        test = _within(rule.min, rule.max)
    elif op in _NUMBER_OPS:
        test = _compared(op, rule.value)
    elif op in ("exists", "not_exists"):
        test = _present if op == "exists" else _negated(_present)
    elif op in _TEXT_OPS:
        test = _text_test(op, rule.value, bool(rule.ignore_case))
    else:
        test, show = _time_test(rule)
    return _Leaf(rule.field, _describe(rule), test, show)


def _describe(rule: Rule) -> str:
    if rule.name:
        return rule.name
    head = f"{rule.field} {rule.op}"
    match rule.op:
        case "exists" | "not_exists":
            return head
        case "range" | "between":
            low, high = ("" if v is None else _shown(v) for v in (rule.min, rule.max))
            return f"{head} {low}..{high}"
        case "time_of_day":
            return f"{head} {rule.from_}-{rule.to} {rule.time_zone}"
        case "day_of_week":
            return f"{head} {', '.join(map(str, rule.value))} {rule.time_zone}"
        case "older_than" | "newer_than":
            return f"{head} {rule.days} days"
    return f"{head} {rule.value!r}" + (" (ignoring case)" if rule.ignore_case else "")


def _negated(test: Test) -> Test:
    return lambda value, snapshot: not test(value, snapshot)


def _present(value: Any, _snapshot: Snapshot) -> bool:
    return value is not MISSING and value is not None and value != ""


def _member_of(wanted: list[Any], ignore_case: bool, op: str) -> Test:
    """Equality with one or several values. A number and decimal text compare as numbers
    (an unquoted 78701 in YAML still matches the text '78701'), two texts as texts
    ('01234' is not '1234'); booleans only match booleans (True is not 1); text
    optionally ignores case."""
    texts: set[str] = set()
    numbers: set[float] = set()  # the numbers given as numbers
    any_numbers: set[float] = set()  # and as decimal text, for a number in the snapshot
    flags: set[bool] = set()
    for item in wanted:
        if isinstance(item, bool):
            flags.add(item)
        elif isinstance(item, str):
            texts.add(item.casefold() if ignore_case else item)
            if (number := as_number(item)) is not None:
                any_numbers.add(number)
        elif isinstance(item, int | float) and (number := as_number(item)) is not None:
            numbers.add(number)
            any_numbers.add(number)
        else:
            if item is None:
                raise ValueError(f"op {op!r} cannot compare with null: use exists / not_exists")
            what = repr(item) if isinstance(item, float) else type(item).__name__
            raise ValueError(
                f"op {op!r} compares with text, finite numbers or booleans, got {what}"
            )
    frozen_texts, frozen_numbers = frozenset(texts), frozenset(numbers)
    frozen_any, frozen_flags = frozenset(any_numbers), frozenset(flags)

    def test(value: Any, _snapshot: Snapshot) -> bool:
        if isinstance(value, str):
            if (value.casefold() if ignore_case else value) in frozen_texts:
                return True
            return bool(frozen_numbers) and as_number(value) in frozen_numbers
        if isinstance(value, bool):
            return value in frozen_flags
        return isinstance(value, int | float) and value in frozen_any

    return test


def _number_value(value: Any, op: str) -> float:
    number = as_number(value) if not isinstance(value, str) else None
    if number is None:
        raise ValueError(f"op {op!r} needs a number as 'value', got {value!r}")
    return number


def _within(low: float | None, high: float | None) -> Test:
    if low is None and high is None:
        raise ValueError("op 'range' needs 'min' and/or 'max'")
    if low is not None and high is not None and low > high:
        raise ValueError(f"op 'range': min {_shown(low)} is greater than max {_shown(high)}")
    lowest = float("-inf") if low is None else low
    highest = float("inf") if high is None else high

    def test(value: Any, _snapshot: Snapshot) -> bool:
        number = as_number(value)
        return number is not None and lowest <= number <= highest

    return test


def _compared(op: str, value: Any) -> Test:
    limit = _number_value(value, op)
    compare: Callable[[float], bool] = {
        "gte": lambda n: n >= limit,
        "gt": lambda n: n > limit,
        "lte": lambda n: n <= limit,
        "lt": lambda n: n < limit,
    }[op]

    def test(value: Any, _snapshot: Snapshot) -> bool:
        number = as_number(value)
        return number is not None and compare(number)

    return test


def compile_user_pattern(wanted: str, *, ignore_case: bool = False) -> Any:
    """A user's pattern (a flow's rule) compiled by RE2, which matches in time linear in the
    text: Python's backtracking ``re`` lets a 25-character field hold a filter for seconds
    with a pattern like ``(a+)+$``. What RE2 cannot compile (backreferences, lookaround)
    is a ``ValueError`` with RE2's reason, so ``leadflow flow apply`` refuses the flow."""
    options = re2.Options()
    options.log_errors = False  # the reason goes into the error, not onto stderr
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(wanted, options=options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"op 'regex': pattern {wanted!r} is not one RE2 can run: {reason}"
            " (backreferences and lookaround are not supported)"
        ) from None


def _text_test(op: str, wanted: Any, ignore_case: bool) -> Test:
    if op == "regex":
        if not isinstance(wanted, str):
            raise ValueError("op 'regex' needs a pattern string as 'value'")
        pattern = compile_user_pattern(wanted, ignore_case=ignore_case)
        return lambda value, _s: isinstance(value, str) and pattern.search(value) is not None
    if not isinstance(wanted, str) or not wanted:
        raise ValueError(f"op {op!r} needs non-empty text as 'value'")
    needle = wanted.casefold() if ignore_case else wanted
    check: Callable[[str], bool] = {
        "contains": lambda text: needle in text,
        "starts_with": lambda text: text.startswith(needle),
        "ends_with": lambda text: text.endswith(needle),
    }[op]

    def test(value: Any, _snapshot: Snapshot) -> bool:
        return isinstance(value, str) and check(value.casefold() if ignore_case else value)

    return test


# --- time ------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _moment(value: Any) -> date | datetime | None:
    try:
        return read_moment(value)
    except ValueError:
        return None


def _local(value: Any, zone: ZoneInfo) -> date | datetime | None:
    """The value as a local date or time in ``zone``: an instant (epoch ms, an offset)
    is converted; a wall-clock time or a bare date is taken as written."""
    moment = _moment(value)
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        return moment.astimezone(zone)
    return moment


def _time_test(rule: Rule) -> tuple[Test, Show]:
    zone = _zone(rule.time_zone or "UTC")

    def show(value: Any, _snapshot: Snapshot) -> str:
        local = _local(value, zone)
        if local is None:
            return f"{_shown(value)} (not a date)"
        if isinstance(local, datetime):
            return f"{_shown(value)} ({local:%a %Y-%m-%d %H:%M %Z})".replace(" )", ")")
        return f"{_shown(value)} ({local:%a %Y-%m-%d})"

    match rule.op:
        case "time_of_day":
            return _clock_window(str(rule.from_), str(rule.to), zone), show
        case "day_of_week":
            return _weekdays(rule.value, zone), show
        case "before" | "after":
            return _calendar(rule.op, rule.value, zone), show
        case "older_than" | "newer_than":
            assert rule.days is not None
            return _age(rule.op, rule.days, zone), _age_shown(rule.days, zone)
    raise AssertionError(f"unhandled rule op {rule.op}")  # pragma: no cover - Op is closed


def _minutes(hh_mm: str) -> int:
    hours, minutes = hh_mm.split(":")
    return int(hours) * 60 + int(minutes)


def _clock_window(start: str, end: str, zone: ZoneInfo) -> Test:
    """From ``start`` (inclusive) to ``end`` (exclusive), wrapping midnight when the
    end comes first: 22:00-06:00 is the night."""
    first, last = _minutes(start), _minutes(end)
    if first == last:
        raise ValueError(f"op 'time_of_day': 'from' and 'to' are both {start}; the window is empty")
    wraps = first > last

    def test(value: Any, _snapshot: Snapshot) -> bool:
        local = _local(value, zone)
        if not isinstance(local, datetime):
            return False  # a bare date has no time of day
        minute = local.hour * 60 + local.minute
        return (minute >= first or minute < last) if wraps else first <= minute < last

    return test


def _weekdays(names: Any, zone: ZoneInfo) -> Test:
    if not isinstance(names, list) or not names:
        raise ValueError("op 'day_of_week' needs a list of days as 'value', e.g. [mon, tue]")
    wanted: set[int] = set()
    for name in names:
        number = _DAY_NUMBERS.get(name.strip().lower()) if isinstance(name, str) else None
        if number is None:
            raise ValueError(f"op 'day_of_week': {name!r} is not a day (mon ... sun)")
        wanted.add(number)
    days = frozenset(wanted)

    def test(value: Any, _snapshot: Snapshot) -> bool:
        local = _local(value, zone)
        return local is not None and local.weekday() in days

    return test


def _day_of(moment: date | datetime, zone: ZoneInfo) -> date:
    if isinstance(moment, datetime):
        return (moment.astimezone(zone) if moment.tzinfo else moment).date()
    return moment


def _calendar(op: str, limit: Any, zone: ZoneInfo) -> Test:
    """Strictly before or after a calendar date, the value's date taken in ``zone``."""
    try:
        if not (isinstance(limit, str) and _ISO_DATE.fullmatch(limit)):
            raise ValueError("not YYYY-MM-DD")
        day = date.fromisoformat(limit)
    except ValueError as exc:
        raise ValueError(f"op {op!r} needs a date as 'value' (YYYY-MM-DD), got {limit!r}") from exc

    def test(value: Any, _snapshot: Snapshot) -> bool:
        moment = _moment(value)
        if moment is None:
            return False
        return _day_of(moment, zone) < day if op == "before" else _day_of(moment, zone) > day

    return test


def _age_of(value: Any, snapshot: Snapshot, zone: ZoneInfo) -> timedelta | int | None:
    """How long before submission the value is: a timedelta for a time, whole days for
    a bare date (counted in ``zone``); None without a value or a submission time."""
    moment, submitted_ms = _moment(value), as_number(snapshot.get(SUBMITTED_AT))
    if moment is None or submitted_ms is None:
        return None
    submitted = moment_from_epoch_ms(submitted_ms)
    if isinstance(moment, datetime):
        return submitted - (moment if moment.tzinfo else moment.replace(tzinfo=zone))
    return (submitted.astimezone(zone).date() - moment).days


def _age(op: str, days: int, zone: ZoneInfo) -> Test:
    """older_than N: at least N days before submission; newer_than N: less than N days
    before it (or after it). Every readable value is exactly one of the two."""
    span = timedelta(days=days)

    def test(value: Any, snapshot: Snapshot) -> bool:
        age = _age_of(value, snapshot, zone)
        if age is None:
            return False
        old = age >= span if isinstance(age, timedelta) else age >= days
        return old if op == "older_than" else not old

    return test


def _age_shown(days: int, zone: ZoneInfo) -> Show:
    def show(value: Any, snapshot: Snapshot) -> str:
        age = _age_of(value, snapshot, zone)
        if age is None:
            why = "not a date" if _moment(value) is None else f"no {SUBMITTED_AT}"
            return f"{_shown(value)} ({why})"
        whole = age.days if isinstance(age, timedelta) else age
        return f"{_shown(value)} ({whole} days before submission)"

    return show
