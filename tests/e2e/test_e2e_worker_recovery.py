"""A worker killed with SIGKILL is recovered by another worker's reaper.

The recovery app runs in soft-cap mode (prefetch 2, 10-minute lease), so the killed worker holds
CLAIMED rows that nobody may take before the reaper requeues them; thresholds are 2 s.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from apps.recovery import create_app
from e2e_harness import Db, StartWorker, producer_app, wait_until
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from horsies.results import LibraryErrorCode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


app = producer_app(create_app)


def test_reaper_of_another_worker_recovers_a_killed_worker(
    start_worker: StartWorker, app: Horsies, db: Db
) -> None:
    doomed = start_worker("recovery", "--processes", "1")
    long_task = app.tasks["rec.sleep"].send(60)
    row = db.wait_status(long_task.task_id, "RUNNING")
    child_pid = int(row["worker_pid"])
    owner = row["claimed_by_worker_id"]
    prefetched = [app.tasks["rec.add"].send(i, 1) for i in range(2)]
    for handle in prefetched:
        claimed = db.wait_status(handle.task_id, "CLAIMED")
        assert claimed["claimed_by_worker_id"] == owner
    # The main process writes runner heartbeats for the child and claimer heartbeats for the
    # prefetched tasks.
    wait_until(
        lambda: db.query(
            "SELECT 1 FROM horsies_heartbeats WHERE task_id = %s AND role = 'runner'"
            " AND sender_id = %s",
            (long_task.task_id, f"{owner}:{child_pid}"),
        ),
        10,
        "a runner heartbeat",
    )
    wait_until(
        lambda: db.query(
            "SELECT 1 FROM horsies_heartbeats WHERE task_id = %s AND role = 'claimer'",
            (prefetched[0].task_id,),
        ),
        10,
        "a claimer heartbeat",
    )

    os.kill(doomed.pid, signal.SIGKILL)
    assert doomed.wait_exit(10) == -signal.SIGKILL
    # The orphaned child dies with its parent (else it would finish a task already written off).
    wait_until(lambda: not psutil.pid_exists(child_pid), 10, "the orphaned child to exit")

    start_worker("recovery", "--processes", "2")
    # Claimed rows whose claimer heartbeat went stale return to PENDING and run elsewhere.
    assert [h.get(timeout_ms=30_000).unwrap() for h in prefetched] == [1, 2]
    # The RUNNING row whose runner heartbeat went stale is failed as WORKER_CRASHED.
    result = long_task.get(timeout_ms=30_000)
    assert result.is_err()
    assert result.unwrap_err().error_code == LibraryErrorCode.WORKER_CRASHED
    row = db.task(long_task.task_id)
    assert row["status"] == "FAILED"
    assert "heartbeat" in row["failed_reason"]
    assert task_result_from_json(row["result"]).is_err()
