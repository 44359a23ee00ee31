"""One shared ``horsies worker`` (DEFAULT mode, 2 children) running the basic app end to end.

Claim, execute, finalize and retry; the bounded fallback poll (delayed tasks run without a new
notification); a dead child fails its task at once or, when WORKER_CRASHED is in auto_retry_for,
the task is retried.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apps.basic import create_app
from e2e_harness import Db, WorkerProcess, error_of, producer_app, wait_until, worker_fixture
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from horsies.results import LibraryErrorCode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 20_000


app = producer_app(create_app)


worker = worker_fixture("basic", "--processes", "2")


def test_tasks_complete_and_results_are_readable(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handles = [app.tasks["e2e.add"].send(i, 100) for i in range(10)]
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in handles] == [i + 100 for i in range(10)]
    row = db.task(handles[0].task_id)
    assert row["status"] == "COMPLETED"
    assert row["completed_at"] is not None
    assert row["started_at"] is not None
    assert row["worker_pid"] not in (None, worker.pid)  # ran in a child
    assert row["worker_process_name"] == f"worker-{row['worker_pid']}"


def test_a_task_reads_its_own_context(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    handle = app.tasks["e2e.whoami"].send("hello")
    seen = handle.get(timeout_ms=GET_MS).unwrap()
    row = db.task(handle.task_id)
    assert seen == {
        "task_id": handle.task_id,
        "task_name": "e2e.whoami",
        "queue_name": "default",
        "priority": row["priority"],
        "retry_count": 1,
        "attempt": 2,
        "max_retries": 1,
        "is_last_attempt": True,
        "sent_at": row["sent_at"].isoformat(),
        "workflow_id": None,
    }


def test_failing_task_is_failed_with_its_error(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    handle = app.tasks["e2e.fail"].send("bad input")
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert error.error_code == LibraryErrorCode.UNHANDLED_EXCEPTION
    assert "ValueError: bad input" in (error.message or "")
    row = db.failed_task(handle.task_id)
    assert row["retry_count"] == 0


def test_the_worker_log_says_why_a_task_failed(worker: WorkerProcess, app: Horsies) -> None:
    """At the default level: the error code, the message and the traceback (indented, so that a
    message holding a newline cannot pass for a log record of its own)."""
    handle = app.tasks["e2e.fail"].send("bad\n[00:00:00] [worker] [INFO] forged")
    handle.get(timeout_ms=GET_MS)
    line = wait_until(
        lambda: next((ln for ln in worker.output().splitlines() if handle.task_id in ln), None),
        10,
        "the failure to be logged",
    )
    assert "[WARNING] task_failed:" in line
    assert "UNHANDLED_EXCEPTION: Unhandled exception in task fail: ValueError: bad\\n[00:" in line
    after = worker.output().split(line, 1)[1].splitlines()[1:]
    assert after[0].startswith("    Traceback (most recent call last):"), after[:3]
    assert any(ln.startswith("    ValueError: bad") for ln in after[:20]), after[:20]
    assert not any(ln.startswith("[00:00:00]") for ln in worker.output().splitlines())


def test_a_scheduled_retry_says_why(worker: WorkerProcess, app: Horsies, tmp_path: Path) -> None:
    handle = app.tasks["e2e.flaky"].send(str(tmp_path / "why.log"), 2)
    handle.get(timeout_ms=GET_MS)
    assert wait_until(
        lambda: any(
            "task_retry_scheduled: " in ln and "FLAKY: attempt 1" in ln
            for ln in worker.output().splitlines()
        ),
        10,
        "the retry to be logged with its reason",
    )


def test_retries_follow_the_policy_intervals(
    worker: WorkerProcess, app: Horsies, db: Db, tmp_path: Path
) -> None:
    # Fails twice with FLAKY (listed in auto_retry_for), succeeds on the third attempt; the policy
    # waits 1 s before each retry.
    handle = app.tasks["e2e.flaky"].send(str(tmp_path / "flaky.log"), 3)
    times = handle.get(timeout_ms=GET_MS).unwrap()
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.9 <= gap < 3.5 for gap in gaps), gaps
    row = db.task(handle.task_id)
    assert row["status"] == "COMPLETED"
    assert row["retry_count"] == 2


def test_retries_exhausted_fail_with_the_last_error(
    worker: WorkerProcess, app: Horsies, db: Db, tmp_path: Path
) -> None:
    handle = app.tasks["e2e.flaky"].send(str(tmp_path / "never.log"), 99)
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert error.error_code == "FLAKY"
    assert error.message == "attempt 3"
    row = db.task(handle.task_id)
    assert row["status"] == "FAILED"
    assert row["retry_count"] == 2


def test_scheduled_task_runs_after_its_delay_without_notifications(
    worker: WorkerProcess, app: Horsies
) -> None:
    # Nothing else is sent meanwhile: only the worker's bounded poll can pick it up.
    sent = time.time()
    handle = app.tasks["e2e.stamp"].schedule(2.0)
    ran_at = handle.get(timeout_ms=GET_MS).unwrap()
    assert sent + 1.9 <= ran_at <= sent + 2.0 + 4.0


def test_expired_good_until_is_never_claimed(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    broker = app.get_broker()
    expired = broker.enqueue(
        "e2e.add", args=(1, 1), good_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    # Sent later with the same priority: claimed only after the expired one, were it claimable.
    later = app.tasks["e2e.add"].send(2, 2)
    assert later.get(timeout_ms=GET_MS).unwrap() == 4
    follow_up = app.tasks["e2e.add"].send(3, 3)
    assert follow_up.get(timeout_ms=GET_MS).unwrap() == 6
    row = db.task(expired)
    assert row["status"] == "PENDING"
    assert row["claimed_at"] is None


def test_unknown_task_name_fails_with_resolution_error(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    task_id = app.get_broker().enqueue("e2e.not_registered", args=(1,))
    row = db.wait_status(task_id, "FAILED")
    error = error_of(task_result_from_json(row["result"]))
    assert error.error_code == LibraryErrorCode.WORKER_RESOLUTION_ERROR
    assert error.data == {"task_name": "e2e.not_registered"}


def test_corrupt_args_fail_that_task_only(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    broker = app.get_broker()
    # Park the task in the future, corrupt its row, then make it due.
    task_id = broker.enqueue("e2e.add", args=(1, 2), sent_at=datetime.now(UTC) + timedelta(hours=1))
    db.execute(
        "UPDATE horsies_tasks SET args = %s, sent_at = now() WHERE id = %s", ("[1, 2", task_id)
    )
    row = db.wait_status(task_id, "FAILED")
    error = error_of(task_result_from_json(row["result"]))
    assert error.error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR
    assert worker.alive
    assert app.tasks["e2e.add"].send(5, 5).get(timeout_ms=GET_MS).unwrap() == 10


def test_unserializable_result_is_serialization_error(worker: WorkerProcess, app: Horsies) -> None:
    handle = app.tasks["e2e.unserializable"].send()
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert error.error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR


def test_killed_child_fails_its_task_at_once_and_worker_keeps_serving(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = app.tasks["e2e.sleep"].send(60)
    row = db.wait_status(handle.task_id, "RUNNING")
    child_pid = int(row["worker_pid"])
    assert child_pid != worker.pid
    os.kill(child_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    error = error_of(handle.get(timeout_ms=GET_MS))
    # Detected through the child's sentinel, not by the reaper (default thresholds are minutes).
    assert time.monotonic() - killed_at < 5.0
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED
    assert error.data["worker_pid"] == child_pid
    assert error.data["exit_code"] == -signal.SIGKILL
    row = db.task(handle.task_id)
    assert row["status"] == "FAILED"
    assert str(child_pid) in row["failed_reason"]
    # A replacement child serves the following tasks.
    assert worker.alive
    results = [app.tasks["e2e.add"].send(i, i) for i in range(4)]
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in results] == [0, 2, 4, 6]


def test_crashed_task_is_retried_when_worker_crashed_is_listed(
    worker: WorkerProcess, app: Horsies, db: Db, tmp_path: Path
) -> None:
    # The first attempt SIGKILLs its own child; WORKER_CRASHED is in auto_retry_for.
    handle = app.tasks["e2e.crash_once"].send(str(tmp_path / "crash.log"))
    assert handle.get(timeout_ms=GET_MS).unwrap() == "survived"
    assert db.task(handle.task_id)["retry_count"] == 1


def test_worker_writes_state_snapshots(worker: WorkerProcess, db: Db) -> None:
    def snapshot() -> dict[str, Any] | None:
        rows = db.query(
            "SELECT * FROM horsies_worker_states WHERE pid = %s ORDER BY snapshot_at DESC LIMIT 1",
            (worker.pid,),
        )
        return rows[0] if rows else None

    row = wait_until(snapshot, 15, "a worker state snapshot")
    assert row["processes"] == 2
    assert row["queues"] == ["default"]
    assert row["max_claim_per_worker"] == 2
    assert row["memory_usage_mb"] > 0
    assert row["recovery_config"]["check_interval_ms"] == 30_000
    assert row["limits"] == {}  # it enforces no rate or concurrency limit


def test_the_app_is_announced_once_not_once_per_child(worker: WorkerProcess) -> None:
    assert worker.output().count("horsies app created") == 1, worker.output()
