"""The scheduler service loop in-process (horsies_scheduler.service.Scheduler): start-up, checks,
waking on time, catch-up batches, stopping, and error handling.

Tests against PostgreSQL use the module database; the error-path tests use a fake store."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import psycopg
import pytest
from horsies.broker import schedules
from horsies.broker.schedules import (
    DueResult,
    DueStatus,
    InitReport,
    ScheduleRaceLost,
    ScheduleState,
    ScheduleTarget,
    StateSnapshot,
)
from horsies.errors import ConfigurationError, NotRegistered
from horsies_scheduler import Scheduler, run_scheduler
from psycopg.rows import dict_row
from sched_app import build_app

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker import PostgresBroker

pytestmark = pytest.mark.timeout(60)


def interval(name: str, seconds: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task_name": "sched.tick",
        "pattern": {"type": "interval", "seconds": seconds},
        **extra,
    }


def make_app(database_url: str, *schedules: dict[str, Any], **config: Any) -> Horsies:
    return build_app(database_url, {"schedules": list(schedules), **config})


def query(conninfo: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cursor = conn.cursor(row_factory=dict_row)
        cursor.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


async def wait_for(condition: Any, timeout: float, message: str) -> None:
    """Poll a sync condition from async code (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.05)


async def started(scheduler: Scheduler) -> asyncio.Task[None]:
    """Run `scheduler` in a task and wait until it is ready."""
    task = asyncio.create_task(scheduler.run())
    await wait_for(lambda: scheduler.ready is not None and scheduler.ready.is_set(), 20, "ready")
    return task


# -- against PostgreSQL ----------------------------------------------------------------------------


async def test_runs_due_schedules_and_stops_on_request(
    database_url: str, broker: PostgresBroker, clean_db: str
) -> None:
    app = make_app(database_url, interval("fast"), interval("off", enabled=False))
    scheduler = Scheduler(app, broker=broker, install_signal_handlers=False)
    task = await started(scheduler)
    assert [t.name for t in scheduler.targets] == ["fast"]
    await wait_for(lambda: scheduler.tasks_enqueued >= 2, 10, "two runs")
    scheduler.request_stop()
    await asyncio.wait_for(task, 10)
    rows = query(clean_db, "SELECT * FROM horsies_tasks")
    assert len(rows) == scheduler.tasks_enqueued
    states = query(clean_db, "SELECT * FROM horsies_schedule_state")
    assert [s["schedule_name"] for s in states] == ["fast"]
    assert states[0]["run_count"] == len(rows)
    # The passed-in broker stays open.
    assert await broker.get_queue_stats() is not None


async def test_check_returns_the_wait_until_the_next_run(
    database_url: str, broker: PostgresBroker, clean_db: str
) -> None:
    app = make_app(
        database_url, interval("soon", 5), interval("later", 30), check_interval_seconds=60
    )
    scheduler = Scheduler(app, broker=broker, install_signal_handlers=False)
    task = await started(scheduler)
    scheduler.request_stop()
    await asyncio.wait_for(task, 10)
    delay = await scheduler.check()
    assert 3.5 < delay <= 5.0
    query(clean_db, "UPDATE horsies_schedule_state SET next_run_at = now() + interval '2 minutes'")
    assert 59.0 < await scheduler.check() <= 60.0  # bounded by check_interval_seconds


async def test_a_long_catch_up_is_finished_in_batches_at_once(
    database_url: str,
    broker: PostgresBroker,
    clean_db: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(schedules, "CATCH_UP_BATCH", 3)
    app = make_app(database_url, interval("sync", 60, catch_up_missed=True))
    scheduler = Scheduler(app, broker=broker, install_signal_handlers=False)
    with caplog.at_level(logging.INFO, logger="horsies.scheduler"):
        task = await started(scheduler)
        (overdue,) = query(
            clean_db,
            "UPDATE horsies_schedule_state SET next_run_at = now() - interval '450 seconds' "
            "RETURNING next_run_at",
        )
        await wait_for(lambda: scheduler.tasks_enqueued >= 8, 10, "eight catch-up runs")
        scheduler.request_stop()
        await asyncio.wait_for(task, 10)
    assert len(query(clean_db, "SELECT id FROM horsies_tasks")) == 8
    (state,) = query(clean_db, "SELECT * FROM horsies_schedule_state")
    assert state["next_run_at"] == overdue["next_run_at"] + dt.timedelta(minutes=8)
    assert caplog.text.count("schedule_catch_up: 'sync'") == 3  # batches of 3, 3 and 2


async def test_a_state_row_deleted_while_running_is_recreated_not_run(
    database_url: str, broker: PostgresBroker, clean_db: str
) -> None:
    app = make_app(database_url, interval("minutely", 60))
    scheduler = Scheduler(app, broker=broker, install_signal_handlers=False)
    task = await started(scheduler)
    scheduler.request_stop()
    await asyncio.wait_for(task, 10)
    query(clean_db, "DELETE FROM horsies_schedule_state")
    await scheduler.check()
    (state,) = query(clean_db, "SELECT * FROM horsies_schedule_state")
    assert state["run_count"] == 0
    assert query(clean_db, "SELECT id FROM horsies_tasks") == []


async def test_validation_errors_abort_start_up_before_touching_state(
    database_url: str, broker: PostgresBroker, clean_db: str
) -> None:
    app = make_app(database_url, interval("ghost", task_name="sched.nope"))
    scheduler = Scheduler(app, broker=broker, install_signal_handlers=False)
    with pytest.raises(NotRegistered):
        await scheduler.run()
    assert query(clean_db, "SELECT * FROM horsies_schedule_state") == []


async def test_stop_requested_before_run_returns_after_start_up(
    database_url: str, broker: PostgresBroker, clean_db: str
) -> None:
    app = make_app(database_url, interval("fast"))
    scheduler = Scheduler(app, broker=broker, install_signal_handlers=False)
    scheduler.request_stop()
    await asyncio.wait_for(scheduler.run(), 10)
    assert scheduler.tasks_enqueued == 0
    assert len(query(clean_db, "SELECT * FROM horsies_schedule_state")) == 1


def test_app_without_schedule_config_is_e205(database_url: str) -> None:
    app = build_app(database_url, {"no_schedule": True})
    with pytest.raises(ConfigurationError, match="no schedule configuration"):
        Scheduler(app)


def test_run_scheduler_returns_when_scheduling_is_disabled(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(database_url, interval("fast"), enabled=False)
    with caplog.at_level(logging.WARNING, logger="horsies.scheduler"):
        run_scheduler(app, configure_logs=False, install_signal_handlers=False)
    assert "Scheduling is disabled" in caplog.text
    assert app.role == "scheduler"


# -- error handling, with a fake store -------------------------------------------------------------

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class FakeBroker:
    async def ensure_schema_initialized(self) -> None:
        return None

    async def close_async(self) -> None:
        return None


class FakeStore:
    """Every schedule is always due; `fail_load` / `fail_run` / `hang` inject failures."""

    def __init__(self) -> None:
        self.loads = 0
        self.runs: list[str] = []
        self.fail_load = 0
        self.fail_run: dict[str, BaseException] = {}
        self.hang = False

    async def initialize(self, targets: Sequence[ScheduleTarget]) -> InitReport:
        return InitReport(now=NOW, created={}, reset={}, kept={t.name: NOW for t in targets})

    async def load(self, names: Sequence[str]) -> StateSnapshot:
        self.loads += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_load:
            self.fail_load -= 1
            raise RuntimeError("database unreachable")
        states = {
            name: ScheduleState(name, None, NOW - dt.timedelta(seconds=1), None, 0, "h", None)
            for name in names
        }
        return StateSnapshot(now=NOW, states=states)

    async def run_due(self, target: ScheduleTarget) -> DueResult:
        self.runs.append(target.name)
        error = self.fail_run.get(target.name)
        if error is not None:
            raise error
        return DueResult(
            DueStatus.RAN,
            NOW,
            NOW + dt.timedelta(hours=1),
            task_ids=("t1",),
            slots=(NOW - dt.timedelta(seconds=1),),
        )


def fake_scheduler(app: Horsies) -> tuple[Scheduler, FakeStore]:
    scheduler = Scheduler(app, broker=cast("Any", FakeBroker()), install_signal_handlers=False)
    store = FakeStore()
    scheduler.store = cast("Any", store)
    return scheduler, store


async def test_one_failing_schedule_does_not_stop_the_others(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(database_url, interval("bad"), interval("lost"), interval("good"))
    scheduler, store = fake_scheduler(app)
    task = await started(scheduler)
    store.fail_run = {"bad": RuntimeError("boom"), "lost": ScheduleRaceLost("lost")}
    store.runs.clear()
    with caplog.at_level(logging.INFO, logger="horsies.scheduler"):
        delay = await scheduler.check()
    assert store.runs == ["bad", "good", "lost"]  # equally overdue: by name
    assert delay == pytest.approx(1.0, abs=0.1)  # unknown next runs: check again at the interval
    assert "schedule_run_failed: 'bad': boom" in caplog.text
    assert "schedule_run_lost" in caplog.text
    assert "schedule_run: 'good' enqueued sched.tick task t1" in caplog.text
    scheduler.request_stop()
    await asyncio.wait_for(task, 10)


async def test_a_failing_check_is_retried_with_backoff(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(database_url, interval("fast"))
    scheduler, store = fake_scheduler(app)
    store.fail_load = 2
    with caplog.at_level(logging.ERROR, logger="horsies.scheduler"):
        task = await started(scheduler)
        await wait_for(lambda: store.runs, 10, "a run after the failures")
    scheduler.request_stop()
    await asyncio.wait_for(task, 10)
    assert caplog.text.count("schedule_check_failed: database unreachable") == 2
    assert "next check in 1.0s" in caplog.text
    assert "next check in 2.0s" in caplog.text


async def test_a_second_stop_request_cancels_a_hung_check(database_url: str) -> None:
    app = make_app(database_url, interval("fast"))
    scheduler, store = fake_scheduler(app)
    task = await started(scheduler)
    store.hang = True
    loads = store.loads
    await wait_for(lambda: store.loads > loads, 5, "the hung check")
    scheduler.request_stop()
    await asyncio.sleep(0.1)
    assert not task.done()  # the first request waits for the check in progress
    scheduler.request_stop()
    await asyncio.wait_for(task, 5)  # returns normally: a requested stop
    assert not task.cancelled()
