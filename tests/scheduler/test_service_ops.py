"""The scheduler's broker operations against PostgreSQL (horsies.broker.schedules): state
initialisation and config changes, due runs and catch-up (one run per missed slot, the overdue one
included), the task's own options on scheduled rows, and duplicate prevention under concurrency
and races."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from horsies import DailySchedule, IntervalSchedule, SchedulePattern
from horsies.broker import schedules
from horsies.broker.driver_sync import run_step
from horsies.broker.enqueue import EnqueueRequest
from horsies.broker.limits import LimitTag
from horsies.broker.locks import schedule_lock_key
from horsies.broker.schedules import (
    DueResult,
    DueStatus,
    ScheduleRaceLost,
    ScheduleTarget,
    initialize_states_op,
    load_states_op,
    run_due_op,
)
from horsies.broker.sql import schedules as sched_sql
from horsies.schedule_calc import next_run_after
from horsies_scheduler.calculator import config_hash
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker

MINUTE = dt.timedelta(minutes=1)
EVERY_MINUTE = IntervalSchedule(minutes=1)


def target(
    name: str = "s",
    pattern: SchedulePattern = EVERY_MINUTE,
    *,
    catch_up: bool = False,
    timezone: str = "UTC",
    **task: Any,
) -> ScheduleTarget:
    return ScheduleTarget(
        name=name,
        pattern=pattern,
        timezone=timezone,
        catch_up_missed=catch_up,
        config_hash=config_hash(pattern, timezone),
        task=EnqueueRequest(task_name=task.pop("task_name", "sched.job"), **task),
    )


class Rows:
    """Direct reads and test-only writes on the module database."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.cursor(row_factory=dict_row).execute(sql, params).fetchall()  # type: ignore[arg-type]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def state(self, name: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM horsies_schedule_state WHERE schedule_name = %s", (name,))
        assert rows, name
        return rows[0]

    def tasks(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM horsies_tasks ORDER BY created_at, sent_at")

    def set_next_run(self, name: str, seconds_from_now: float | None) -> dt.datetime | None:
        rows = self.query(
            "UPDATE horsies_schedule_state SET next_run_at = "
            "CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => %s) END "
            "WHERE schedule_name = %s RETURNING next_run_at",
            (seconds_from_now, seconds_from_now, name),
        )
        return rows[0]["next_run_at"]


@pytest.fixture
def rows(clean_db: str) -> Rows:
    return Rows(clean_db)


def run_due(broker: PostgresBroker, t: ScheduleTarget) -> DueResult:
    return broker.execute(run_due_op(t), action="schedule_run", transaction=True)


def overdue_target(broker: PostgresBroker, rows: Rows) -> ScheduleTarget:
    """Schedule ``s`` (every minute) initialised, its stored next run a second ago."""
    t = target()
    broker.execute(initialize_states_op([t]), action="t")
    rows.set_next_run("s", -1.0)
    return t


# -- every SQL constant prepares against the migrated schema ---------------------------------------


def _constants() -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in vars(sched_sql).items()
        if name.isupper() and isinstance(value, str)
    ]


def _positional(query: str) -> str:
    numbers: dict[str, int] = {}

    def repl(match: re.Match[str]) -> str:
        numbers.setdefault(match.group(1), len(numbers) + 1)
        return f"${numbers[match.group(1)]}"

    return re.sub(r"%\((\w+)\)s", repl, query)


def test_schedule_sql_module_has_its_statements() -> None:
    assert {name for name, _ in _constants()} == {
        "SCHEDULE_TRY_LOCK",
        "SCHEDULE_STATE_GET",
        "SCHEDULE_STATE_GET_MANY",
        "SCHEDULE_STATE_INSERT_MANY_IF_ABSENT",
        "SCHEDULE_STATE_RESET_MANY_IF_CHANGED",
        "SCHEDULE_STATE_ADVANCE_IF_DUE",
    }


@pytest.mark.parametrize(("name", "query"), _constants(), ids=[n for n, _ in _constants()])
def test_schedule_sql_prepares(database_conninfo: str, name: str, query: str) -> None:
    del name
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        res = conn.pgconn.prepare(b"sched_probe", _positional(query).encode())
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message.decode()


# -- start-up: create, keep, reset -----------------------------------------------------------------


def test_initialize_creates_rows_with_the_first_slot_after_now(
    broker: PostgresBroker, rows: Rows
) -> None:
    daily = DailySchedule(time=dt.time(9, 30))
    targets = [target("a"), target("b", daily, timezone="America/New_York")]
    report = broker.execute(initialize_states_op(targets), action="t")
    assert set(report.created) == {"a", "b"}
    assert report.reset == {}
    assert report.kept == {}
    assert report.created["a"] == report.now + MINUTE
    assert report.created["b"] == next_run_after(daily, report.now, "America/New_York")
    state = rows.state("a")
    assert state["next_run_at"] == report.now + MINUTE
    assert state["run_count"] == 0
    assert state["last_run_at"] is None
    assert state["last_task_id"] is None
    assert state["config_hash"] == targets[0].config_hash


def test_initialize_keeps_unchanged_rows_and_resets_changed_ones(
    broker: PostgresBroker, rows: Rows
) -> None:
    broker.execute(
        initialize_states_op([target("same"), target("changed"), target("unset")]), action="t"
    )
    kept_next = rows.set_next_run("same", -3600)  # overdue: kept as is (a restart resumes)
    rows.set_next_run("changed", -3600)
    rows.set_next_run("unset", None)
    rows.execute(
        "INSERT INTO horsies_schedule_state (schedule_name, next_run_at) VALUES ('gone', now())"
    )
    gone = rows.state("gone")
    new_pattern = IntervalSchedule(minutes=5)
    report = broker.execute(
        initialize_states_op([target("same"), target("changed", new_pattern), target("unset")]),
        action="t",
    )
    assert report.kept == {"same": kept_next}
    assert report.created == {}
    assert report.reset == {
        "changed": report.now + 5 * MINUTE,
        "unset": report.now + MINUTE,
    }
    assert rows.state("same")["next_run_at"] == kept_next
    changed = rows.state("changed")
    assert changed["next_run_at"] == report.now + 5 * MINUTE
    assert changed["config_hash"] == config_hash(new_pattern, "UTC")
    assert rows.state("gone") == gone  # rows of removed schedules are left in place
    assert rows.tasks() == []


def test_initialize_with_a_row_written_meanwhile_keeps_that_row(
    broker: PostgresBroker, rows: Rows
) -> None:
    t = target("raced")
    op = initialize_states_op([t])
    with psycopg.connect(rows.conninfo, autocommit=True) as conn:
        step = next(op)
        result = run_step(conn, step)  # read: no row yet
        step = op.send(result)
        # Another scheduler creates the row between our read and our insert.
        rows.execute(
            "INSERT INTO horsies_schedule_state (schedule_name, next_run_at, config_hash) "
            "VALUES ('raced', now() + interval '1 hour', 'other')"
        )
        with pytest.raises(StopIteration) as stop:
            op.send(run_step(conn, step))
    report = stop.value.value
    assert report.created == {}
    assert report.kept == {"raced": None}
    assert rows.state("raced")["config_hash"] == "other"


# -- due runs --------------------------------------------------------------------------------------


def test_not_due_enqueues_nothing(broker: PostgresBroker, rows: Rows) -> None:
    t = target()
    broker.execute(initialize_states_op([t]), action="t")
    before = rows.state("s")
    result = run_due(broker, t)
    assert result.status is DueStatus.NOT_DUE
    assert result.next_run_at == before["next_run_at"]
    assert rows.state("s") == before
    assert rows.tasks() == []


def test_due_run_enqueues_one_task_with_the_task_options_and_advances(
    broker: PostgresBroker, rows: Rows
) -> None:
    options = json.dumps({"auto_retry_for": ["KeyError"], "retry_policy": None, "good_until": None})
    t = target(
        args=(1, "x"),
        kwargs={"k": [1, 2]},
        queue_name="reports",
        priority=7,
        task_options=options,
        max_retries=3,
    )
    broker.execute(initialize_states_op([t]), action="t")
    slot = rows.set_next_run("s", -1.0)
    result = run_due(broker, t)
    assert result.status is DueStatus.RAN
    assert result.slots == (slot,)
    # Without catch-up the next run is computed from the run time.
    assert result.next_run_at == result.now + MINUTE
    (task,) = rows.tasks()
    assert result.task_ids == (task["id"],)
    assert task["task_name"] == "sched.job"
    assert task["status"] == "PENDING"
    assert (task["queue_name"], task["priority"]) == ("reports", 7)
    assert json.loads(task["args"]) == [1, "x"]
    assert json.loads(task["kwargs"]) == {"k": [1, 2]}
    assert task["task_options"] == options
    assert task["max_retries"] == 3
    assert task["sent_at"] <= task["created_at"] + dt.timedelta(milliseconds=1)
    state = rows.state("s")
    assert state["run_count"] == 1
    assert state["last_task_id"] == task["id"]
    assert state["last_run_at"] == result.now
    assert state["next_run_at"] == result.now + MINUTE
    # Run again at once: not due any more.
    assert run_due(broker, t).status is DueStatus.NOT_DUE
    assert len(rows.tasks()) == 1


def test_catch_up_enqueues_one_task_per_missed_slot_and_keeps_the_cadence(
    broker: PostgresBroker, rows: Rows
) -> None:
    t = target(catch_up=True)
    broker.execute(initialize_states_op([t]), action="t")
    overdue = rows.set_next_run("s", -210.0)  # 3.5 minutes down
    assert overdue is not None
    result = run_due(broker, t)
    assert result.status is DueStatus.RAN
    assert result.slots == tuple(
        overdue + i * MINUTE for i in range(4)
    )  # the overdue slot is included
    assert result.next_run_at == overdue + 4 * MINUTE
    tasks = rows.tasks()
    assert [task["id"] for task in tasks] == list(result.task_ids)
    state = rows.state("s")
    assert state["run_count"] == 4
    assert state["last_task_id"] == result.task_ids[-1]


def test_runs_of_a_task_under_a_limit_are_stored_under_it(
    broker: PostgresBroker, rows: Rows
) -> None:
    t = target(catch_up=True, limit=LimitTag("per-tenant", "acme"))
    broker.execute(initialize_states_op([t]), action="t")
    rows.set_next_run("s", -90.0)  # two slots down
    result = run_due(broker, t)
    assert result.status is DueStatus.RAN
    tasks = rows.tasks()
    assert [task["id"] for task in tasks] == list(result.task_ids)
    assert [(task["limit_name"], task["limit_key"]) for task in tasks] == [
        ("per-tenant", "acme")
    ] * 2
    assert rows.state("s")["run_count"] == 2


def test_long_catch_up_is_split_into_batches(
    broker: PostgresBroker, rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedules, "CATCH_UP_BATCH", 3)
    t = target(catch_up=True)
    broker.execute(initialize_states_op([t]), action="t")
    overdue = rows.set_next_run("s", -450.0)  # slots S .. S+7m are due
    assert overdue is not None
    first = run_due(broker, t)
    assert len(first.task_ids) == 3
    assert first.next_run_at == overdue + 3 * MINUTE  # still due: the caller goes on
    second = run_due(broker, t)
    third = run_due(broker, t)
    assert (len(second.task_ids), len(third.task_ids)) == (3, 2)
    assert third.next_run_at == overdue + 8 * MINUTE
    assert len(rows.tasks()) == 8
    assert rows.state("s")["run_count"] == 8


def test_missing_or_unset_row_is_initialised_not_run(broker: PostgresBroker, rows: Rows) -> None:
    t = target()
    created = run_due(broker, t)
    assert created.status is DueStatus.CREATED
    assert created.next_run_at == created.now + MINUTE
    assert rows.state("s")["next_run_at"] == created.next_run_at
    rows.set_next_run("s", None)
    reset = run_due(broker, t)
    assert reset.status is DueStatus.CREATED
    assert rows.state("s")["next_run_at"] == reset.next_run_at
    assert rows.tasks() == []


def test_load_states_reads_the_database_clock_and_the_rows(
    broker: PostgresBroker, rows: Rows
) -> None:
    empty = broker.execute(load_states_op(["a", "b"]), action="t")
    assert empty.states == {}
    assert abs(empty.now - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    broker.execute(initialize_states_op([target("a"), target("c")]), action="t")
    snapshot = broker.execute(load_states_op(["a", "b"]), action="t")
    assert set(snapshot.states) == {"a"}
    assert snapshot.states["a"].next_run_at == rows.state("a")["next_run_at"]


# -- duplicate prevention --------------------------------------------------------------------------


def test_a_schedule_locked_by_another_scheduler_is_skipped(
    broker: PostgresBroker, rows: Rows
) -> None:
    t = overdue_target(broker, rows)
    with psycopg.connect(rows.conninfo, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (schedule_lock_key("s"),))
        result = run_due(broker, t)
        assert result.status is DueStatus.BUSY
        assert rows.tasks() == []
        other.execute("SELECT pg_advisory_unlock(%s)", (schedule_lock_key("s"),))
    assert run_due(broker, t).status is DueStatus.RAN
    assert len(rows.tasks()) == 1


def test_a_row_changed_during_the_run_rolls_the_insert_back(
    broker: PostgresBroker, rows: Rows
) -> None:
    t = overdue_target(broker, rows)
    op = run_due_op(t)

    def run_with_interference(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            step = next(op)
            step = op.send(run_step(conn, step))  # locked and read: due
            # Someone who ignores the lock (an operator, a reset) moves the row meanwhile.
            rows.set_next_run("s", 600.0)
            op.send(run_step(conn, step))

    with (
        psycopg.connect(rows.conninfo, autocommit=True) as conn,
        pytest.raises(ScheduleRaceLost),
    ):
        run_with_interference(conn)
    assert rows.tasks() == []
    assert rows.state("s")["run_count"] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("catch_up", "expected"), [(False, 1), (True, 4)])
def test_concurrent_runs_of_one_due_slot_enqueue_it_once(
    broker: PostgresBroker, rows: Rows, catch_up: bool, expected: int
) -> None:
    t = target(catch_up=catch_up)
    broker.execute(initialize_states_op([t]), action="t")
    for round_number in range(5):
        rows.execute("DELETE FROM horsies_tasks")
        rows.set_next_run("s", -210.0)
        results = _contend(broker, t, contenders=8)
        statuses = sorted(result.status for result in results)
        assert statuses.count(DueStatus.RAN) == 1, (round_number, statuses)
        assert set(statuses) <= {DueStatus.RAN, DueStatus.BUSY, DueStatus.NOT_DUE}
        assert len(rows.tasks()) == expected


def _contend(broker: PostgresBroker, t: ScheduleTarget, contenders: int) -> list[DueResult]:
    """Run `t` from `contenders` threads released at once; every result (errors fail)."""
    barrier = threading.Barrier(contenders)
    results: list[DueResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def contend() -> None:
        try:
            barrier.wait(timeout=30)
            result = run_due(broker, t)
            with lock:
                results.append(result)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == contenders
    return results
