"""Seed documents 000 (the event's properties) and 001 (an event's core and type-specific
fields): every field they list is on the events of the demo flow's run
(``tests.seeds.demo_run``), under its name in the event schema (README, "Field names"), and
set where it applies.

The documents are kept beside this test as they were given (``seed_000_event_fields.txt``,
``seed_001_events.txt``), so the lists are parsed, never copied by hand.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from projectors.selection import FIELD_ALIASES
from schemas.codec import load_schema
from tests.seeds.demo_run import DemoRun

HERE = Path(__file__).parent
SEED_000 = (HERE / "seed_000_event_fields.txt").read_text(encoding="utf-8")
SEED_001 = (HERE / "seed_001_events.txt").read_text(encoding="utf-8")

# A property line is followed by its type line: "ms" then "integer", "flow_ping_limits"
# then "Ping Limit · object".
_TYPE_LINE = re.compile(
    r"(enum<string>|string|integer|boolean|object|string<date-time>|.+ · object)"
)

# Seed 001's examples spell some fields otherwise than seed 000 and the schema do: each is
# the field on the right (the four of FIELD_ALIASES, which filters accept too, and these).
SEED_001_SPELLINGS = {
    **FIELD_ALIASES,
    "lead": "vars",  # the lead snapshot
    "integration": "module_id",  # the module that ran the step (LeadConduit's integration)
    "response_code": "response",  # the buyer's HTTP status: response.status
    "price": "revenue",  # what the buyer pays for the lead
}
# Fields no event of the run sets, each with why (none today: kept to say so if one goes).
EXCLUDED: dict[str, str] = {}


def seed_000_fields(text: str) -> list[str]:
    lines = text.splitlines()
    return [
        line
        for line, following in itertools.pairwise(lines)
        if re.fullmatch(r"[a-z_]+", line) and _TYPE_LINE.fullmatch(following)
    ]


def seed_001_examples(text: str) -> dict[str, list[str]]:
    """Each JSON example's top-level keys, by the heading line before it (``Core Fields``
    and ``Every event includes:`` give "Every event includes:")."""
    examples: dict[str, list[str]] = {}
    lines = text.splitlines()
    depth, heading = 0, ""
    for i, line in enumerate(lines):
        if line == "{" and depth == 0:
            depth, heading = 1, lines[i - 1]
            examples[heading] = []
            continue
        if depth == 1 and (key := re.match(r'"([a-z_]+)":', line)):
            examples[heading].append(key.group(1))
        depth += line.endswith("{") - line.startswith("}")
    return examples


def test_the_seed_lists_are_read_whole() -> None:
    # The parsers read what the documents hold, not an empty list that would pass anything.
    fields = seed_000_fields(SEED_000)
    assert len(fields) == 27
    assert fields[0] == "outcome" and fields[-1] == "response"
    examples = seed_001_examples(SEED_001)
    assert examples == {
        "Every event includes:": ["id", "type", "timestamp", "lead_id", "flow_id", "entity_id"],
        "Delivery events:": ["outcome", "duration_ms", "integration", "response_code", "price"],
        "Filter events:": ["outcome", "reason", "rule_set", "rules_evaluated"],
        "Complete lead state at event time:": ["lead"],
    }


def test_every_seed_field_names_a_field_of_the_event_schema() -> None:
    schema = {f["name"] for f in load_schema()["fields"]}
    assert [f for f in seed_000_fields(SEED_000) if f not in schema] == []
    for keys in seed_001_examples(SEED_001).values():
        assert [k for k in keys if SEED_001_SPELLINGS.get(k, k) not in schema] == []


@pytest.mark.stack
@pytest.mark.xdist_group("seeds")
def test_every_seed_field_is_set_on_the_events_of_the_demo_run(demo_run: DemoRun) -> None:
    events = demo_run.events

    def unset(fields: list[str], among: list[dict[str, Any]]) -> list[str]:
        """The fields missing from an event of ``among``, or set on none of them."""
        assert among
        return [
            f
            for f in fields
            if f not in EXCLUDED
            and not (
                all(SEED_001_SPELLINGS.get(f, f) in e for e in among)
                and any(e[SEED_001_SPELLINGS.get(f, f)] not in (None, {}, []) for e in among)
            )
        ]

    assert unset(seed_000_fields(SEED_000), events) == []
    examples = seed_001_examples(SEED_001)
    of_type = {
        "Every event includes:": events,
        "Delivery events:": [e for e in events if e["type"] == "recipient.delivered"],
        "Filter events:": [e for e in events if e["type"] == "filter.failed"],
        "Complete lead state at event time:": events,
    }
    for heading, keys in examples.items():
        assert unset(keys, of_type[heading]) == [], heading
    delivered = of_type["Delivery events:"][0]
    assert delivered["response"]["status"] == 200  # seed 001's response_code
