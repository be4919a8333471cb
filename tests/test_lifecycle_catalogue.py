"""README "Lifecycle events" answers every row of seed 004's catalogue: emitted (and how),
or why it does not apply. The catalogue is copied here from the seed (``shared/seeds/004``),
so a row the README drops, or one it invents, fails."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"

CATALOGUE = {
    "agent": ["created", "updated", "deleted"],
    "source": ["created", "updated", "deleted"],
    "connection": ["connecting", "connected", "invalid", "disconnected", "terminated",
                   "interaction_required"],
    "task": ["created", "updated", "deleted"],
    "task_run": ["queued", "running", "pending", "completed", "failed", "canceled",
                 "interaction_required"],
    "storage": ["created", "deleted"],
    "workflow_run": ["queued", "running", "sleeping", "completed", "failed", "canceled",
                     "interaction_required"],
    "event_destination": ["activated", "deactivated"],
}  # fmt: skip
EVERY_TYPE = {f"{obj}.{action}" for obj, actions in CATALOGUE.items() for action in actions}


def lifecycle_table() -> dict[str, str]:
    """Each event type the README's catalogue table names, with its row's answer."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Lifecycle events", 1)[1].split("\n### ", 1)[0]
    answers: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_.]+)`", cells[0])
        obj = names[0].split(".")[0]
        for name in names:  # `task_run.queued` / `.running`: the object is the first's
            answers[name if not name.startswith(".") else obj + name] = cells[1]
    return answers


def test_every_catalogue_row_is_answered_and_no_other() -> None:
    assert set(lifecycle_table()) == EVERY_TYPE


def test_each_answer_says_emitted_or_why_not() -> None:
    for name, answer in lifecycle_table().items():
        said = answer.startswith(("emitted", "not applicable", "not emitted as such"))
        assert said and len(answer) > len("emitted"), f"{name}: {answer!r}"


def test_the_export_rows_are_left_to_scheduled_exports() -> None:
    table = lifecycle_table()
    for name in ("task_run.queued", "task_run.completed", "task_run.failed", "storage.created"):
        assert table[name].startswith("emitted by scheduled exports"), name
