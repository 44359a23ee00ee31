"""End to end: a real ``horsies scheduler`` process enqueues on time, validates its configuration at
start-up and stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import itertools
import re
import signal
import statistics
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from db_rows import Db
from process_harness import wait_until
from sched_harness import StartScheduler, interval_schedule

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(90)
def test_one_second_interval_enqueues_on_time_for_ten_seconds(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    proc = start_scheduler({"schedules": [interval_schedule("every-second")]})
    started = sched_db.now()
    # Observe ~10 s of runs (bounded poll on the table, no sleep as synchronisation).
    wait_until(lambda: len(sched_db.tasks()) >= 10, 20.0, "ten scheduled tasks", interval=0.2)
    assert proc.stop() == 0
    rows = sched_db.tasks()
    state = sched_db.state("every-second")
    assert state is not None
    assert state["run_count"] == len(rows)
    assert state["last_task_id"] == rows[-1]["id"]
    # The first run is the first slot after start-up (creation + 1 s), not immediately.
    first_run = re.search(r"schedule_created: 'every-second': first run at (\S+)", proc.output())
    assert first_run is not None
    first_slot = datetime.fromisoformat(first_run.group(1))
    assert first_slot - started <= timedelta(seconds=1)
    assert rows[0]["created_at"] >= first_slot
    created = [r["created_at"] for r in rows]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(created)]
    # Lateness of each enqueue against the slot it was for (from the scheduler's log lines).
    slots = proc.runs()
    lateness = [
        (r["created_at"] - slots[r["id"]][1]).total_seconds() for r in rows if r["id"] in slots
    ]
    assert len(lateness) == len(rows)
    assert slots[rows[0]["id"]][1] == first_slot
    print(
        f"\n1s interval: {len(rows)} runs; gaps min {min(gaps):.4f} mean "
        f"{statistics.mean(gaps):.4f} max {max(gaps):.4f} s; lateness vs slot: median "
        f"{statistics.median(lateness) * 1000:.1f} ms, max {max(lateness) * 1000:.1f} ms"
    )
    assert all(0.0 <= late < 0.25 for late in lateness), lateness
    assert all(0.95 <= gap < 1.3 for gap in gaps), gaps
    assert statistics.mean(gaps) < 1.06
    for row in rows:
        assert row["status"] == "PENDING"
        assert row["queue_name"] == "default"
        assert row["args"] is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_scheduler_at_once_with_exit_code_0(
    start_scheduler: StartScheduler, sched_db: Db, signum: int
) -> None:
    # Next run in a day and checks every 60 s: the wait between checks must be interrupted.
    spec = {
        "schedules": [
            {**interval_schedule("daily-ish"), "pattern": {"type": "interval", "days": 1}}
        ],
        "check_interval_seconds": 60,
    }
    proc = start_scheduler(spec)
    begin = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait_exit(15) == 0
    assert time.monotonic() - begin < 5.0
    output = proc.output()
    assert "Scheduler stopped" in output
    assert "Traceback" not in output
    assert sched_db.task_count() == 0
    state = sched_db.state("daily-ish")
    assert state is not None
    assert state["run_count"] == 0


@pytest.mark.timeout(60)
def test_banner_lists_the_schedules(start_scheduler: StartScheduler, sched_db: Db) -> None:
    del sched_db
    spec = {
        "schedules": [
            interval_schedule("fast"),
            {**interval_schedule("off"), "enabled": False},
            {
                "name": "cron-job",
                "task_name": "sched.echo",
                "args": [3],
                "pattern": {"type": "cron", "expression": "*/5 * * * *"},
                "timezone": "Europe/Berlin",
            },
        ]
    }
    proc = start_scheduler(spec)
    output = proc.output()
    assert "role:        scheduler" in output
    assert "[schedules] (2/3 enabled)" in output
    assert "fast: every 1s -> sched.tick" in output
    assert "off: every 1s (disabled) -> sched.tick" in output
    assert "cron-job: cron */5 * * * * (Europe/Berlin) -> sched.echo" in output
    assert "Scheduler: 2/3 schedules enabled" in output
    assert "schedule_created: 'fast'" in output
    assert "schedule_created: 'off'" not in output
    assert proc.stop() == 0


# -- start-up failures exit 1 with a clear error ---------------------------------------------------


def _failed_start(start_scheduler: StartScheduler, spec: Mapping[str, Any], **options: Any) -> str:
    proc = start_scheduler(spec, ready=False, **options)
    assert proc.wait_exit(60) == 1
    output = proc.output()
    assert "Scheduler ready" not in output
    assert "Traceback" not in output
    return output


@pytest.mark.timeout(90)
def test_unregistered_task_fails_start_up_with_e300(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    spec = {"schedules": [{**interval_schedule("ghost"), "task_name": "sched.missing"}]}
    output = _failed_start(start_scheduler, spec)
    assert "error[E300]: scheduled task 'sched.missing' not registered" in output
    assert "available tasks: sched.async_tick, sched.echo, sched.retrying, sched.tick" in output
    assert sched_db.states() == {}


@pytest.mark.timeout(90)
def test_queue_name_in_default_mode_fails_start_up_with_e205(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    del sched_db
    spec = {"schedules": [{**interval_schedule("queued"), "queue_name": "urgent"}]}
    output = _failed_start(start_scheduler, spec)
    assert "error[E205]: invalid queue configuration for schedule 'queued'" in output
    assert "cannot specify queue_name in DEFAULT mode" in output


@pytest.mark.timeout(90)
def test_missing_required_params_fail_start_up_with_e205(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    del sched_db
    spec = {"schedules": [{**interval_schedule("no-args"), "task_name": "sched.echo"}]}
    output = _failed_start(start_scheduler, spec)
    assert "error[E205]: schedule 'no-args' is missing required params for task 'sched.echo'" in (
        output
    )
    assert "missing: value" in output


@pytest.mark.timeout(90)
def test_several_invalid_schedules_are_reported_together(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    del sched_db
    spec = {
        "schedules": [
            {**interval_schedule("ghost"), "task_name": "sched.missing"},
            {**interval_schedule("no-args"), "task_name": "sched.echo"},
            {**interval_schedule("fine")},
        ]
    }
    output = _failed_start(start_scheduler, spec)
    assert "error[E300]" in output
    assert "error[E205]" in output
    assert "aborting due to 2 previous errors" in output


@pytest.mark.timeout(90)
def test_app_without_schedule_config_exits_1(start_scheduler: StartScheduler, sched_db: Db) -> None:
    del sched_db
    output = _failed_start(start_scheduler, {"no_schedule": True})
    assert "No schedule configuration" in output
    assert "[ERROR]" in output


@pytest.mark.timeout(90)
def test_disabled_scheduling_exits_1_with_a_warning(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    spec = {"enabled": False, "schedules": [interval_schedule("fast")]}
    output = _failed_start(start_scheduler, spec)
    assert "Scheduling is disabled" in output
    assert "[WARNING]" in output
    assert sched_db.states() == {}


@pytest.mark.timeout(90)
def test_invalid_timezone_fails_while_loading_the_app(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    del sched_db
    spec = {"schedules": [{**interval_schedule("tz"), "timezone": "Mars/Olympus"}]}
    output = _failed_start(start_scheduler, spec)
    assert "Invalid timezone 'Mars/Olympus'" in output


@pytest.mark.timeout(90)
def test_bad_locator_exits_1_with_e208(start_scheduler: StartScheduler, sched_db: Db) -> None:
    del sched_db
    output = _failed_start(start_scheduler, {}, locator="tests.scheduler.no_such_module:app")
    assert "error[E208]" in output


@pytest.mark.timeout(90)
def test_unreachable_database_fails_start_up_with_exit_1(
    start_scheduler: StartScheduler, sched_db: Db
) -> None:
    del sched_db
    spec = {"schedules": [interval_schedule("fast")], "pool_timeout": 2}
    proc = start_scheduler(
        spec, ready=False, database_url="postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing"
    )
    assert proc.wait_exit(60) == 1
    output = proc.output()
    assert "Scheduler ready" not in output
    assert "Scheduler failed: BrokerError" in output
    assert "secret" not in output
