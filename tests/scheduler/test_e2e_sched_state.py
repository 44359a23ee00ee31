"""End to end: real ``horsies scheduler`` processes and the stored schedule state — two schedulers
never enqueue a slot twice, a restart resumes from the stored next run, catch-up (one run
per missed slot), config changes, and the task's own options on scheduled rows."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from db_rows import Db
from process_harness import wait_until
from sched_harness import StartScheduler, interval_schedule

pytestmark = pytest.mark.e2e


def _minutely(name: str, **extra: Any) -> dict[str, Any]:
    return {**interval_schedule(name), "pattern": {"type": "interval", "minutes": 1}, **extra}


# -- two schedulers --------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_two_schedulers_never_enqueue_a_slot_twice(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    names = [f"s{i}" for i in range(6)]
    spec = {"schedules": [interval_schedule(name) for name in names]}
    first = start_scheduler(spec)
    second = start_scheduler(spec)
    # ~8 s of 1-second slots for six schedules, raced by both processes.
    wait_until(lambda: len(sched_db.tasks()) >= 6 * 8, 30.0, "48 scheduled tasks", interval=0.2)
    assert first.stop() == 0
    assert second.stop() == 0
    rows = sched_db.tasks()
    states = sched_db.states()
    by_id_first, by_id_second = first.runs(), second.runs()
    # Every task was enqueued by exactly one of the two processes.
    assert set(by_id_first).isdisjoint(by_id_second)
    assert {r["id"] for r in rows} == set(by_id_first) | set(by_id_second)
    per_schedule: dict[str, list[datetime]] = {name: [] for name in names}
    for name, slot in [*by_id_first.values(), *by_id_second.values()]:
        per_schedule[name].append(slot)
    for name in names:
        enqueued = sorted(per_schedule[name])
        assert states[name]["run_count"] == len(enqueued)
        # Distinct slots, about a second apart: a duplicate would repeat a slot.
        assert len(set(enqueued)) == len(enqueued)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(enqueued)]
        assert all(gap >= 0.95 for gap in gaps), (name, gaps)
    print(
        f"\ntwo schedulers: {len(rows)} tasks, {len(by_id_first)} by the first, "
        f"{len(by_id_second)} by the second"
    )


@pytest.mark.timeout(120)
def test_two_schedulers_catch_up_a_missed_period_once(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    spec = {"schedules": [_minutely("sync", catch_up_missed=True)]}
    first = start_scheduler(spec)
    second = start_scheduler(spec)
    # As if both had been down for 3.5 minutes: slots S, S+1m, S+2m, S+3m are due.
    overdue = sched_db.set_next_run("sync", -210)
    wait_until(lambda: len(sched_db.tasks()) >= 4, 20.0, "four catch-up tasks")

    def advanced() -> bool:
        state = sched_db.state("sync")
        return state is not None and state["next_run_at"] > overdue

    wait_until(advanced, 10.0, "next run advanced")
    # Once next_run_at lies ahead nothing more is due; stopping lets any check in flight finish.
    assert first.stop() == 0
    assert second.stop() == 0
    assert len(sched_db.tasks()) == 4
    state = sched_db.state("sync")
    assert state is not None
    assert state["run_count"] == 4
    assert state["next_run_at"] == overdue + timedelta(minutes=4)


# -- restarts, catch-up and config changes ---------------------------------------------------------


@pytest.mark.timeout(120)
def test_restart_resumes_from_the_stored_next_run(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    spec = {"schedules": [interval_schedule("hourly-ish", 3600)]}
    first = start_scheduler(spec)
    assert first.stop() == 0
    created = sched_db.state("hourly-ish")
    assert created is not None
    assert created["run_count"] == 0
    assert created["config_hash"]
    # Time "passes" while no scheduler runs: the stored next run is now 2 s away.
    due = sched_db.set_next_run("hourly-ish", 2.0)
    second = start_scheduler(spec)
    # On a loaded machine the start-up may take longer than the 2 s: the run is then due when the
    # scheduler gets ready, and it must come right away instead of on time.
    ready_at = sched_db.now()
    assert "schedule_resumed: 'hourly-ish'" in second.output()
    assert "schedule_config_changed" not in second.output()
    wait_until(sched_db.tasks, 15.0, "the resumed run")
    (row,) = sched_db.tasks()
    assert row["created_at"] >= due
    assert row["created_at"] - max(due, ready_at) < timedelta(seconds=1)
    state = sched_db.state("hourly-ish")
    assert state is not None
    assert state["run_count"] == 1
    assert state["last_task_id"] == row["id"]
    assert state["config_hash"] == created["config_hash"]
    # Without catch-up the next run is computed from the run time.
    assert state["next_run_at"] - state["last_run_at"] == timedelta(seconds=3600)
    assert second.stop() == 0
    # A third start with no time passing enqueues nothing and keeps the state.
    third = start_scheduler(spec)
    assert third.stop() == 0
    assert len(sched_db.tasks()) == 1
    assert sched_db.state("hourly-ish") == state


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("catch_up", "expected"), [(True, 4), (False, 1)])
def test_downtime_is_caught_up_only_with_catch_up_missed(
    start_scheduler: StartScheduler, sched_db: Db, catch_up: bool, expected: int
) -> None:
    spec = {"schedules": [_minutely("minutely", catch_up_missed=catch_up)]}
    assert start_scheduler(spec).stop() == 0
    overdue = sched_db.set_next_run("minutely", -210)  # down for 3.5 minutes
    proc = start_scheduler(spec)
    wait_until(lambda: len(sched_db.tasks()) >= expected, 15.0, f"{expected} task(s)")
    state = sched_db.state("minutely")
    assert state is not None
    assert state["run_count"] == expected
    if catch_up:
        # One run per missed slot, the overdue one included; the cadence is kept.
        assert state["next_run_at"] == overdue + timedelta(minutes=4)
        assert "schedule_catch_up: 'minutely' enqueued 4 sched.tick tasks" in proc.output()
    else:
        # One run now; the next slot is computed from now.
        assert state["next_run_at"] - state["last_run_at"] == timedelta(minutes=1)
    assert proc.stop() == 0
    assert len(sched_db.tasks()) == expected


@pytest.mark.timeout(120)
def test_changed_pattern_resets_the_next_run_without_catching_up(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    spec = {"schedules": [_minutely("changing", catch_up_missed=True)]}
    assert start_scheduler(spec).stop() == 0
    old = sched_db.state("changing")
    assert old is not None
    sched_db.set_next_run("changing", -600)  # long overdue under the old pattern
    two_minutes = {"type": "interval", "minutes": 2}
    changed = _minutely("changing", catch_up_missed=True, pattern=two_minutes)
    proc = start_scheduler({"schedules": [changed]})
    assert "schedule_config_changed: 'changing'" in proc.output()
    assert "[WARNING]" in proc.output()
    started = sched_db.now()
    assert proc.stop() == 0
    state = sched_db.state("changing")
    assert state is not None
    assert state["config_hash"] != old["config_hash"]
    assert state["run_count"] == 0
    assert timedelta(minutes=1.9) < state["next_run_at"] - started <= timedelta(minutes=2)
    assert sched_db.tasks() == []


@pytest.mark.timeout(120)
def test_changed_arguments_keep_the_next_run(start_scheduler: StartScheduler, sched_db: Db) -> None:
    base = {**_minutely("args"), "task_name": "sched.echo", "args": [1]}
    assert start_scheduler({"schedules": [base]}).stop() == 0
    old = sched_db.state("args")
    changed = {**base, "args": [2], "kwargs": {"label": "y"}, "catch_up_missed": True}
    proc = start_scheduler({"schedules": [changed]})
    assert "schedule_resumed: 'args'" in proc.output()
    assert proc.stop() == 0
    assert sched_db.state("args") == old


@pytest.mark.timeout(120)
def test_scheduled_rows_carry_the_tasks_own_options_and_arguments(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    spec = {
        "schedules": [
            {**interval_schedule("retrying"), "task_name": "sched.retrying"},
            {
                **interval_schedule("echo"),
                "task_name": "sched.echo",
                "args": [7],
                "kwargs": {"label": "n"},
            },
        ]
    }
    proc = start_scheduler(spec)
    wait_until(
        lambda: sched_db.tasks("sched.retrying") and sched_db.tasks("sched.echo"),
        15.0,
        "one run of each schedule",
    )
    assert proc.stop() == 0
    retrying = sched_db.tasks("sched.retrying")[0]
    assert retrying["max_retries"] == 2  # the task's own retry policy applies
    options = json.loads(retrying["task_options"])
    assert options["auto_retry_for"] == ["ValueError"]
    assert options["retry_policy"]["intervals"] == [1, 2]
    assert retrying["priority"] == 100
    echo = sched_db.tasks("sched.echo")[0]
    assert echo["max_retries"] == 0
    assert json.loads(echo["args"]) == [7]
    assert json.loads(echo["kwargs"]) == {"label": "n"}
    assert echo["queue_name"] == "default"


@pytest.mark.timeout(120)
def test_disabled_and_removed_schedules_are_left_alone(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    spec = {"schedules": [_minutely("kept"), _minutely("removed")]}
    assert start_scheduler(spec).stop() == 0
    removed = sched_db.state("removed")
    sched_db.set_next_run("removed", -30)
    removed = sched_db.state("removed")
    spec = {"schedules": [_minutely("kept"), {**_minutely("off"), "enabled": False}]}
    proc = start_scheduler(spec)
    assert proc.stop() == 0
    states = sched_db.states()
    assert "off" not in states
    assert states["removed"] == removed
    assert sched_db.tasks() == []
