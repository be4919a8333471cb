"""The export scheduler on real Postgres with a fake clock: due times, each scheduled time
run once with two schedulers racing, retries of a failing destination until it works, the
files in S3, Azure and a local folder, and the task_run.*/storage.* events of each run."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.destinations import Destination
from engine.flows import Flow
from engine.objects.destination import open_store
from engine.settings import Settings
from engine.state.postgres import migrate_state
from projectors.exports import schedules, task_runs
from projectors.exports.errors import LeaseLostError
from projectors.exports.scheduler import ExportScheduler
from projectors.exports.schedules import ScheduleRequest
from projectors.store import Connection, connect
from tests.factories import make_flow
from tests.system_outbox import ensure_outbox, system_events
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

START = datetime(2026, 12, 5, 10, 2, tzinfo=UTC)


class FakeClock:
    """The schedulers' time: moved by the test; each reading a microsecond later than the
    last, so events written at one instant still sort in the order they were written."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(microseconds=1)
            return self.now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.now += timedelta(**delta)


@pytest.fixture
def sched_settings(export_settings: Settings, tmp_path: Path) -> Settings:
    settings = export_settings.model_copy(update={"export_local_dir": tmp_path / "exports"})
    migrate_state(settings)
    ensure_outbox(settings)
    return settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sched_db(sched_settings: Settings) -> Iterator[Connection]:
    with connect(sched_settings) as conn:
        yield conn


def scheduler(settings: Settings, clock: FakeClock, name: str) -> ExportScheduler:
    return ExportScheduler(settings, clock=clock, retry_base_s=30, retry_cap_s=600, name=name)


def make_schedule(
    conn: Connection, clock: FakeClock, destination: dict[str, Any], **fields: Any
) -> schedules.Schedule:
    request = ScheduleRequest.model_validate({"destination": destination, **fields})
    return schedules.create_schedule(conn, request, "test", clock(), clear_text=True)


def event_types(settings: Settings) -> list[str]:
    return [e["type"] for e in system_events(settings)]


def test_a_run_waits_for_its_time_and_each_time_runs_once(
    sched_settings: Settings, sched_db: Connection, clock: FakeClock, flow_events: list[Any]
) -> None:
    schedule = make_schedule(
        sched_db, clock, {"kind": "local", "path": "hourly"}, cron="0 * * * *",
        query={"flow_id": sched_settings.db_schema, "format": "jsonl"},
    )  # fmt: skip
    worker = scheduler(sched_settings, clock, "one")
    clock.advance(minutes=57, seconds=59)  # 10:59:59
    assert worker.run_once(sched_db) is None
    clock.advance(seconds=1)  # 11:00
    run = worker.run_once(sched_db)
    assert run is not None and run.status == "completed"
    assert run.scheduled_for == datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    assert worker.run_once(sched_db) is None  # 11:00 is done; 12:00 is not yet

    assert run.output_location is not None
    written = Path(run.output_location.removeprefix("file://"))
    assert (
        written
        == sched_settings.export_local_dir / "hourly" / schedule.id / "20261205T1100Z.jsonl.gz"
    )  # type: ignore[operator]
    lines = gzip.decompress(written.read_bytes()).decode().splitlines()
    assert len(lines) == run.row_count == len(flow_events)
    assert list(written.parent.iterdir()) == [written]  # no partial file left beside it

    types = event_types(sched_settings)
    assert types[:2] == ["task_run.queued", "task_run.running"]
    # The run's completion and its file are one instant (one transaction): either order.
    assert sorted(types[2:]) == ["storage.created", "task_run.completed"]
    completed = system_events(sched_settings, "task_run.completed")[0]
    stored = system_events(sched_settings, "storage.created")[0]
    assert completed["subject"] == run.id and completed["flow_id"] == sched_settings.db_schema
    assert completed["data"]["status"] == "completed"
    assert completed["data"]["schedule"]["cron"] == "0 * * * *"
    assert stored["subject"] == run.output_location
    assert stored["data"]["task_run_id"] == run.id and stored["data"]["rows"] == len(flow_events)


def test_two_schedulers_racing_run_each_scheduled_time_exactly_once(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    for _ in range(schedules_n := 4):
        make_schedule(sched_db, clock, {"kind": "local", "path": "race"}, cron="*/5 * * * *",
                      query={"flow_id": sched_settings.db_schema})  # fmt: skip
    clock.advance(minutes=3)  # 10:05, the first time due
    rounds = 6
    barrier = threading.Barrier(2)
    done: dict[str, list[str]] = {"a": [], "b": []}
    failures: list[BaseException] = []

    def race(name: str) -> None:
        try:
            worker = scheduler(sched_settings, clock, name)
            with connect(sched_settings) as conn:
                for _ in range(rounds):
                    barrier.wait(30)  # both schedulers start each round together
                    while (run := worker.run_once(conn)) is not None:
                        done[name].append(run.id)
                    barrier.wait(30)
                    if name == "a":
                        clock.advance(minutes=5)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []

    runs = task_runs.list_runs(sched_db)
    times = sorted((r.schedule_id, r.scheduled_for) for r in runs)
    assert len(times) == len(set(times)) == rounds * schedules_n  # 10:05 … 10:30, each once
    assert all(r.status == "completed" and r.attempts == 1 for r in runs)
    assert sorted(done["a"] + done["b"]) == sorted(r.id for r in runs)  # each run by one only
    files = list((sched_settings.export_local_dir / "race").rglob("*.gz"))  # type: ignore[operator]
    assert len(files) == rounds * schedules_n
    types = event_types(sched_settings)
    for kind in ("task_run.queued", "task_run.running", "task_run.completed", "storage.created"):
        assert types.count(kind) == rounds * schedules_n, kind


def test_a_scheduler_that_read_the_schedule_before_another_queued_it_queues_nothing(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection
) -> None:
    """The unique (schedule, time) row is the guarantee, not the lock: a schedule whose
    ``last_scheduled_for`` is stale (as a racing reader would see it) queues no second run."""
    schedule = make_schedule(sched_db, clock, {"kind": "local"}, cron="*/5 * * * *")
    clock.advance(minutes=3)  # 10:05
    assert len(task_runs.queue_due_runs(sched_db, clock())) == 1
    sched_db.execute(
        "UPDATE engine_export_schedules SET last_scheduled_for = %s WHERE id = %s",
        (START, schedule.id),
    )
    assert task_runs.queue_due_runs(sched_db, clock()) == []
    assert len(task_runs.list_runs(sched_db)) == 1
    assert event_types(sched_settings).count("task_run.queued") == 1


def test_a_failing_destination_is_retried_with_backoff_until_it_works(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    root = sched_settings.export_local_dir
    assert root is not None
    root.mkdir(parents=True)
    blocker = root / "daily"
    blocker.write_text("a file where the folder must go")  # the destination refuses
    make_schedule(sched_db, clock, {"kind": "local", "path": "daily"}, cron="5 10 * * *",
                  query={"flow_id": sched_settings.db_schema})  # fmt: skip
    worker = scheduler(sched_settings, clock, "one")
    clock.advance(minutes=3)  # 10:05

    first = worker.run_once(sched_db)
    assert first is not None and first.status == "queued" and first.attempts == 1
    assert first.error is not None and "daily" in first.error
    clock.advance(seconds=29)
    assert worker.run_once(sched_db) is None  # the backoff (30 s) is not over
    clock.advance(seconds=1)
    second = worker.run_once(sched_db)
    assert second is not None and second.status == "queued" and second.attempts == 2
    assert second.next_attempt_at - clock.now > timedelta(seconds=59)  # doubled

    blocker.unlink()  # the destination recovers
    clock.advance(seconds=60)
    third = worker.run_once(sched_db)
    assert third is not None and third.status == "completed" and third.attempts == 3
    assert third.id == first.id and third.error is None
    assert len(list((root / "daily").rglob("*.csv.gz"))) == 1

    events = system_events(sched_settings, "task_run.")
    assert [e["type"] for e in events] == [
        "task_run.queued", "task_run.running", "task_run.queued", "task_run.running",
        "task_run.queued", "task_run.running", "task_run.completed",
    ]  # fmt: skip
    assert events[2]["reason"].startswith("retry after attempt 1: ")


def test_a_run_failing_every_attempt_ends_failed_with_its_error(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    settings = sched_settings.model_copy(update={"export_local_dir": None})
    make_schedule(sched_db, clock, {"kind": "local"}, cron="*/5 * * * *", max_attempts=2)
    worker = scheduler(settings, clock, "one")
    clock.advance(minutes=3)
    assert worker.run_once(sched_db) is not None
    clock.advance(seconds=30)
    last = worker.run_once(sched_db)
    assert last is not None and last.status == "failed" and last.attempts == 2
    assert last.error == "a local destination needs LEADFLOW_EXPORT_LOCAL_DIR to be set"
    clock.advance(hours=1)
    assert task_runs.list_runs(sched_db, status="queued") == [
        r for r in task_runs.list_runs(sched_db) if r.scheduled_for > last.scheduled_for
    ]  # the failed run is not taken again; only later times are queued
    failed = system_events(sched_settings, "task_run.failed")
    assert len(failed) == 1 and failed[0]["reason"] == last.error


@pytest.mark.parametrize("kind", ["s3", "azure_blob"])
def test_a_scheduled_export_lands_in_object_storage_and_old_files_go(
    kind: str,
    sched_settings: Settings,
    clock: FakeClock,
    sched_db: Connection,
    flow_events: list[Any],
) -> None:
    bucket = sched_settings.s3_bucket if kind == "s3" else sched_settings.azure_container
    prefix = f"{sched_settings.export_prefix}scheduled"  # emptied by export_settings
    destination = {"kind": kind, "bucket": bucket, "prefix": prefix}
    query = {"flow_id": sched_settings.db_schema}
    schedule = make_schedule(
        sched_db, clock, destination, cron="*/5 * * * *", query=query, keep_files=1
    )
    worker = scheduler(sched_settings, clock, "one")
    clock.advance(minutes=3)
    run = worker.run_once(sched_db)
    assert run is not None and run.status == "completed", run
    key = f"{prefix}/{schedule.id}/20261205T1005Z.csv.gz"
    assert run.output_location == f"{kind}://{bucket}/{key}"
    store = open_store(Destination(kind=kind, bucket=bucket), sched_settings)  # type: ignore[arg-type]
    try:
        csv = gzip.decompress(store.get(key)).decode()
        assert all(e["id"] in csv for e in flow_events)
        assert len(csv.splitlines()) == len(flow_events) + 1  # the header

        # keep_files 1: the next run's file replaces this one, which is deleted.
        clock.advance(minutes=5)
        later = worker.run_once(sched_db)
        assert later is not None and later.status == "completed"
        assert store.list_keys(f"{prefix}/{schedule.id}/") == [
            f"{prefix}/{schedule.id}/20261205T1010Z.csv.gz"
        ]
    finally:
        store.close()
    stored = system_events(sched_settings, "storage.created")
    assert [s["subject"] for s in stored] == [run.output_location, later.output_location]
    (deleted,) = system_events(sched_settings, "storage.deleted")
    assert deleted["subject"] == run.output_location
    assert deleted["data"]["task_run_id"] == run.id
    first = next(r for r in task_runs.list_runs(sched_db) if r.id == run.id)
    assert first.output_deleted_at is not None


def test_a_run_another_scheduler_is_claiming_is_skipped_not_waited_for(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection
) -> None:
    """The claim's row lock, made certain: the race test above may or may not interleave."""
    make_schedule(sched_db, clock, {"kind": "local"}, cron="*/5 * * * *")
    clock.advance(minutes=3)
    assert len(task_runs.queue_due_runs(sched_db, clock())) == 1
    with connect(sched_settings) as other, other.transaction():
        other.execute("SELECT id FROM engine_task_runs FOR UPDATE")  # mid-claim elsewhere
        sched_db.execute("SET lock_timeout = '5s'")  # waiting would fail, not hang
        assert task_runs.claim_run(sched_db, "b", clock(), 60) is None
    claimed = task_runs.claim_run(sched_db, "b", clock(), 60)
    assert claimed is not None and claimed[0].status == "running"


def test_a_run_whose_scheduler_died_is_taken_again_when_its_lease_ends(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    make_schedule(sched_db, clock, {"kind": "local"}, cron="*/5 * * * *", max_attempts=2,
                  query={"flow_id": sched_settings.db_schema})  # fmt: skip
    clock.advance(minutes=3)
    task_runs.queue_due_runs(sched_db, clock())
    dead = task_runs.claim_run(sched_db, "dead", clock(), 60)  # then it is killed
    assert dead is not None
    survivor = scheduler(sched_settings, clock, "survivor")
    clock.advance(seconds=59)
    assert survivor.run_once(sched_db) is None  # the lease holds
    clock.advance(seconds=2)
    run = survivor.run_once(sched_db)
    assert run is not None and run.id == dead[0].id
    assert run.status == "completed" and run.attempts == 2 and run.worker == "survivor"
    # The dead scheduler, back, records nothing over its successor's result.
    with pytest.raises(LeaseLostError):
        task_runs.complete_run(sched_db, dead[0], dead[1], clock(), "file:///nowhere", 0, 0)


def test_a_run_whose_scheduler_dies_every_attempt_is_given_up(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection
) -> None:
    make_schedule(sched_db, clock, {"kind": "local"}, cron="*/5 * * * *", max_attempts=2)
    clock.advance(minutes=3)
    task_runs.queue_due_runs(sched_db, clock())
    for _ in range(2):
        assert task_runs.claim_run(sched_db, "dies", clock(), 60) is not None
        clock.advance(seconds=61)
    assert task_runs.claim_run(sched_db, "next", clock(), 60) is None
    (run,) = task_runs.list_runs(sched_db)
    assert run.status == "failed" and run.attempts == 2
    assert run.error is not None and "gave up after 2 attempts" in run.error
    assert event_types(sched_settings)[-1] == "task_run.failed"


def test_the_scheduler_role_migrates_then_runs_due_exports_until_stopped(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    make_schedule(sched_db, clock, {"kind": "local", "path": "role"}, cron="*/5 * * * *",
                  query={"flow_id": sched_settings.db_schema})  # fmt: skip
    clock.advance(minutes=3)
    stop = threading.Event()
    worker = ExportScheduler(sched_settings, clock=clock, poll_s=0.05, name="role")
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        done = wait_until(
            lambda: task_runs.list_runs(sched_db, status="completed"), 30, "the 10:05 run"
        )
        clock.advance(minutes=5)  # polling goes on: the next time runs too
        done = wait_until(
            lambda: task_runs.list_runs(sched_db, status="completed"), 30, "the 10:10 run",
            until=lambda runs: len(runs) == 2,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert [r.scheduled_for.minute for r in done] == [10, 5]


def flow_exporting(flow_id: str, exports: list[dict[str, Any]]) -> Flow:
    definition = make_flow(flow_id, "http://127.0.0.1:9/leads").model_dump(mode="json")
    return Flow.model_validate({**definition, "exports": exports})


def test_a_flow_files_exports_are_scheduled_updated_and_stopped_with_the_flow(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    nightly = {
        "id": "nightly",
        "cron": "5 10 * * *",
        "destination": {"kind": "local", "path": "flow"},
        "filters": {"type": ["recipient.failed"], "format": "jsonl"},
    }
    declared = [flow_exporting(sched_settings.db_schema, [nightly])]
    worker = ExportScheduler(sched_settings, clock=clock, flows=lambda: declared)
    assert worker.run_once(sched_db) is None  # 10:02: scheduled, not yet due
    clock.advance(minutes=3)  # 10:05
    run = worker.run_once(sched_db)
    assert run is not None and run.status == "completed"
    assert run.schedule_id == f"flow.{sched_settings.db_schema}.nightly"
    assert run.row_count == 1  # the flow's one failed delivery (flow_events)
    (schedule,) = schedules.list_schedules(sched_db)
    assert schedule.clear_text is False and schedule.created_by == "flow file"

    # The flow changes its cron: the same schedule, its run kept, the next time per the new cron.
    declared = [flow_exporting(sched_settings.db_schema, [nightly | {"cron": "*/15 * * * *"}])]
    clock.advance(minutes=10)  # 10:15
    again = worker.run_once(sched_db)
    assert again is not None and again.schedule_id == run.schedule_id
    assert again.scheduled_for.minute == 15
    assert len(schedules.list_schedules(sched_db)) == 1

    # The flow drops the export: no more runs, the one waiting canceled; the runs stay listed.
    clock.advance(minutes=15)  # 10:30
    assert len(task_runs.queue_due_runs(sched_db, clock())) == 1
    declared = [flow_exporting(sched_settings.db_schema, [])]
    assert worker.run_once(sched_db) is None
    assert [s.enabled for s in schedules.list_schedules(sched_db)] == [False]
    statuses = [r.status for r in task_runs.list_runs(sched_db)]
    assert statuses == ["canceled", "completed", "completed"]
    (canceled,) = system_events(sched_settings, "task_run.canceled")
    assert canceled["reason"] == "the export was removed from its flow"
    assert canceled["data"]["status"] == "canceled"


def test_the_registry_scheduler_stops_the_exports_of_a_deleted_flow(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection
) -> None:
    export = {"id": "x", "cron": "*/5 * * * *", "destination": {"kind": "local"}}
    applied = [flow_exporting("kept", [export]), flow_exporting("gone", [export])]
    schedules.sync_flow_schedules(sched_db, applied, clock(), every_flow=True)
    schedules.sync_flow_schedules(sched_db, applied[:1], clock(), every_flow=True)
    enabled = {s.id: s.enabled for s in schedules.list_schedules(sched_db)}
    assert enabled == {"flow.kept.x": True, "flow.gone.x": False}
    # A flow file's scheduler knows its own flow only: it leaves the others alone.
    schedules.sync_flow_schedules(sched_db, applied[1:], clock(), every_flow=False)
    enabled = {s.id: s.enabled for s in schedules.list_schedules(sched_db)}
    assert enabled == {"flow.kept.x": True, "flow.gone.x": True}


def test_a_local_schedule_keeps_its_newest_files_only(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    schedule = make_schedule(sched_db, clock, {"kind": "local", "path": "kept"},
                             cron="*/5 * * * *", keep_files=2)  # fmt: skip
    worker = scheduler(sched_settings, clock, "one")
    clock.advance(minutes=3)
    for _ in range(4):
        assert worker.run_once(sched_db) is not None
        clock.advance(minutes=5)
    root = sched_settings.export_local_dir
    assert root is not None
    names = sorted(p.name for p in (root / "kept" / schedule.id).iterdir())
    assert names == ["20261205T1015Z.csv.gz", "20261205T1020Z.csv.gz"]
    deleted = [e["data"]["location"] for e in system_events(sched_settings, "storage.deleted")]
    assert [d.rsplit("/", 1)[-1] for d in deleted] == ["20261205T1005Z.csv.gz",
                                                       "20261205T1010Z.csv.gz"]  # fmt: skip


def test_a_scheduler_stopping_mid_run_gives_the_run_back_unspent(
    sched_settings: Settings, clock: FakeClock, sched_db: Connection, flow_events: list[Any]
) -> None:
    make_schedule(sched_db, clock, {"kind": "local"}, cron="*/5 * * * *",
                  query={"flow_id": sched_settings.db_schema})  # fmt: skip
    clock.advance(minutes=3)
    stopping = threading.Event()
    stopping.set()  # seen after the first chunk
    assert scheduler(sched_settings, clock, "leaving").run_once(sched_db, stopping) is None
    (run,) = task_runs.list_runs(sched_db)
    assert run.status == "queued" and run.attempts == 0  # no attempt spent
    assert system_events(sched_settings, "task_run.")[-1]["reason"] == (
        "the scheduler running it stopped"
    )
    finished = scheduler(sched_settings, clock, "next").run_once(sched_db)  # at once
    assert finished is not None and finished.status == "completed" and finished.attempts == 1
