"""Seed document 004 (the lifecycle events' catalogue): README's "Lifecycle events" table
answers every row of it (emitted, and how, or why it does not apply), and one lifecycle of
the demo flow's own objects emits every type that table says is emitted.

The document is kept beside this test as it was given (``seed_004_lifecycle.txt``), so the
catalogue is parsed, never re-typed: a row the README drops, or one it invents, fails; so
does a type README calls emitted that the run below does not emit, or one it calls not
applicable that it does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from engine.api.system_events import router as system_events_router
from engine.cli import app
from engine.flows import Flow
from engine.runtime.outbox_relay import OutboxRelay
from engine.runtime.registry import delete_flow, read_flows
from engine.settings import Settings, get_settings
from engine.state.postgres import migrate_state
from projectors.exports import task_runs
from projectors.exports.jobs import migrate_exports
from projectors.exports.scheduler import ExportScheduler
from projectors.generations import migrate
from projectors.store import connect
from tests.factories import write_flow
from tests.keys import admin_client
from tests.projectors.exports.test_scheduler import START, FakeClock
from tests.seeds.demo_run import demo_environment, demo_flow
from tests.streamers.test_lifecycle_outbox import system_events as topic_events
from tests.system_outbox import system_events as outbox_events

HERE = Path(__file__).parent
README = Path(__file__).parents[2] / "README.md"
SEED_004 = (HERE / "seed_004_lifecycle.txt").read_text(encoding="utf-8")

# A catalogue row: "agent.created | An agent is created |".
_ROW = re.compile(r"^([a-z_]+)\.([a-z_]+) \| .+ \|$")
_TABLE_LINES = ("| Type | Fired when |", "|---|---|")


def seed_catalogue() -> dict[str, list[str]]:
    """Each object of the seed's catalogue with its actions, in the seed's order.

    Every line of the document is a heading, the format's prose, a table's header or a
    row: a row the pattern does not read fails here rather than going missing."""
    lines = SEED_004.splitlines()
    assert lines[:2] == [
        "Event format",
        "Events follow anobject.action naming convention. The data field contains the full"
        " resource object as documented in the API reference, captured at the time of the"
        " event.",
    ]
    catalogue: dict[str, list[str]] = {}
    heading = ""
    for line in lines[2:]:
        if line in _TABLE_LINES:
            continue
        if row := _ROW.match(line):
            # "Task run events" holds task_run.*: the row's object is its heading's.
            assert row[1] == heading.removesuffix(" events").lower().replace(" ", "_"), line
            catalogue.setdefault(row[1], []).append(row[2])
            continue
        assert line.endswith(" events") and "|" not in line, f"unread line: {line!r}"
        heading = line
        assert line.removesuffix(" events").lower().replace(" ", "_") not in catalogue, line
    return catalogue


def every_type() -> set[str]:
    """Every ``object.action`` of the seed's catalogue."""
    return {f"{obj}.{action}" for obj, actions in seed_catalogue().items() for action in actions}


def lifecycle_rows() -> list[tuple[list[str], str]]:
    """Each row of the README's catalogue table: the event types it names, and its answer."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Lifecycle events", 1)[1].split("\n### ", 1)[0]
    rows: list[tuple[list[str], str]] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_.]+)`", cells[0])
        obj = names[0].split(".")[0]
        # `task_run.queued` / `.running`: the object is the first's.
        rows.append(([obj + n if n.startswith(".") else n for n in names], cells[1]))
    return rows


def lifecycle_table() -> dict[str, str]:
    """Each event type the README's catalogue table names, with its row's answer."""
    return {name: answer for names, answer in lifecycle_rows() for name in names}


def emitted_types() -> set[str]:
    """The types README says leadflow emits: its rows answered "emitted...", each row's
    types, or the names it is "emitted as" (``task.*`` as ``flow.*``), one for one."""
    emitted: set[str] = set()
    for names, answer in lifecycle_rows():
        if not answer.startswith("emitted"):
            continue
        if renamed := re.match(r"emitted as ((?:`[a-z_.]+`(?: / )?)+)", answer):
            as_names = re.findall(r"`([a-z_.]+)`", renamed[1])
            emitted.update(dict(zip(names, as_names, strict=True)).values())
        else:
            emitted.update(names)
    return emitted


def test_the_seed_is_read_whole() -> None:
    catalogue = seed_catalogue()
    rows = [line for line in SEED_004.splitlines() if _ROW.match(line)]
    assert sum(len(actions) for actions in catalogue.values()) == len(rows) == len(every_type())
    headings = [line for line in SEED_004.splitlines()[2:] if line.endswith(" events")]
    assert len(catalogue) == len(headings) and all(catalogue.values())


def test_every_catalogue_row_is_answered_and_no_other() -> None:
    assert set(lifecycle_table()) == every_type()


def test_each_answer_says_emitted_or_why_not() -> None:
    for name, answer in lifecycle_table().items():
        said = answer.startswith(("emitted", "not applicable", "not emitted as such"))
        assert said and len(answer) > len("emitted"), f"{name}: {answer!r}"


def test_the_export_rows_are_left_to_scheduled_exports() -> None:
    table = lifecycle_table()
    for name in ("task_run.queued", "task_run.completed", "task_run.failed", "storage.created"):
        assert table[name].startswith("emitted by scheduled exports"), name


def test_a_row_emitted_under_other_names_is_expected_by_those_names() -> None:
    """``task.*`` rows are emitted as ``flow.*``: the run must show the flow's, and never a
    ``task.*`` event (which README's table says leadflow does not write)."""
    table, emitted = lifecycle_table(), emitted_types()
    renamed = {n for n, answer in table.items() if answer.startswith("emitted as")}
    assert renamed and not renamed & emitted
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+", name) for name in emitted)
    assert {n for n in emitted if n in every_type()} == {
        n for n, answer in table.items() if answer.startswith("emitted") and n not in renamed
    }


# The run below: the demo flow applied with two scheduled exports, one writing a local
# folder (keeping its newest file), one whose folder is taken by a file (one attempt).
EXPORTS = [
    {"id": "kept", "cron": "*/5 * * * *", "destination": {"kind": "local", "path": "kept"},
     "keep_files": 1},
    {"id": "broken", "cron": "*/5 * * * *", "destination": {"kind": "local", "path": "broken"},
     "max_attempts": 1},
]  # fmt: skip


@pytest.fixture
def cli_schema(
    stack: Settings, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The CLI's settings on the test's schema (as ``leadflow`` reads them from the
    environment); the flow deleted from the shared registry afterwards, whatever happened."""
    monkeypatch.setenv("LEADFLOW_DB_SCHEMA", unique_id)
    get_settings.cache_clear()
    settings = stack.model_copy(update={"db_schema": unique_id})
    with demo_environment(stack):
        yield settings
    get_settings.cache_clear()
    delete_flow(settings, unique_id)  # its event, if any, in the schema dropped after


def leadflow(*args: str) -> str:
    """``leadflow ARGS`` as an operator types it; its output, after checking it succeeded."""
    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    return done.output


def applied(settings: Settings, flow_id: str) -> list[Flow]:
    """The flow as the registry now holds it (what a registry scheduler would sync)."""
    return [f for f in read_flows(settings) if f.id == flow_id]


@pytest.mark.stack
def test_one_lifecycle_of_the_demo_flow_emits_every_type_readme_says_is_emitted(
    cli_schema: Settings, unique_id: str, tmp_path: Path
) -> None:
    """Apply the demo flow (its destinations verified), run its exports (one file kept, an
    older one deleted, one export failing), drop an export while its run waits, disable a
    destination, delete the flow; then the events in Postgres, over HTTP and on the topic."""
    settings = cli_schema.model_copy(update={"export_local_dir": tmp_path / "exports"})
    migrate_state(settings)
    migrate_exports(settings)
    with connect(settings) as conn:
        migrate(conn, settings.db_schema)  # the projection the exports read (empty)
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "broken").write_text("a file where the folder must go")
    demo = demo_flow(unique_id, "http://127.0.0.1:9", cli_schema)
    definition = demo.model_dump(mode="json")
    flow = Flow.model_validate({**definition, "exports": EXPORTS})
    flow_file = write_flow(tmp_path / "flow.yaml", flow)

    assert "flow.created" in leadflow("flow", "apply", str(flow_file))
    declared = applied(settings, unique_id)  # reassigned after each apply: the lambda reads it
    clock = FakeClock(START)  # 10:02
    scheduler = ExportScheduler(settings, clock=clock, flows=lambda: declared, name="seed004")
    with connect(settings) as conn:
        assert scheduler.run_once(conn) is None  # the exports scheduled, none due yet
        for _ in range(2):  # 10:05, 10:10: kept writes (deleting 10:05's file), broken fails
            clock.advance(minutes=5)
            done = list(iter(lambda: scheduler.run_once(conn), None))
            assert sorted(r.status for r in done) == ["completed", "failed"]
        clock.advance(minutes=5)  # 10:15: both due; broken's run waits while it is dropped
        assert len(task_runs.queue_due_runs(conn, clock())) == 2
        write_flow(flow_file, Flow.model_validate({**definition, "exports": EXPORTS[:1]}))
        assert "flow.updated" in leadflow("flow", "apply", str(flow_file))
        declared = applied(settings, unique_id)
        last = scheduler.run_once(conn)
        assert last is not None and last.status == "completed"
        statuses = sorted(r.status for r in task_runs.list_runs(conn))
        assert statuses == ["canceled", "completed", "completed", "completed", "failed", "failed"]
    destination = next(d for d in demo.destinations if d.enabled)
    leadflow("streamer", "disable", unique_id, destination.key)
    leadflow("flow", "delete", unique_id)
    with closing(OutboxRelay(settings)) as relay:
        relay.publish_pending()  # the export runs' events: the relay role publishes them

    rows = outbox_events(settings)
    http = admin_client(api(settings)).get("/system-events", params={"limit": 1000})
    assert http.status_code == 200, http.text
    served = http.json()
    assert len(served) == len(rows)  # every row published, and listed once
    published = topic_events(settings, {e["id"] for e in served})
    assert sorted(e["id"] for e in published) == sorted(e["id"] for e in served)
    for where, events in (("outbox", rows), ("GET /system-events", served),
                          ("leadflow.system-events", published)):  # fmt: skip
        assert_the_catalogue_is_emitted(where, events)


def api(settings: Settings) -> FastAPI:
    app_ = FastAPI()
    app_.state.settings = settings
    app_.include_router(system_events_router)
    return app_


def assert_the_catalogue_is_emitted(where: str, events: list[dict[str, Any]]) -> None:
    """Each type README says is emitted, at least once with a ``data`` object; no type of
    the catalogue README says is not (``task.*`` included: those are emitted as ``flow.*``)."""
    emitted = emitted_types()
    with_data = {e["type"] for e in events if isinstance(e["data"], dict) and e["data"]}
    missing = sorted(emitted - with_data)
    assert not missing, f"{where}: never emitted with a data object: {missing}"
    unexpected = sorted({e["type"] for e in events} & (every_type() - emitted))
    assert not unexpected, f"{where}: README says these are not emitted: {unexpected}"
