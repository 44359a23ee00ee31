"""Graceful shutdown on SIGTERM/SIGINT.

Running tasks finish and their results are written, unstarted claims go back to PENDING at once,
tasks still running after --shutdown-timeout are terminated as WORKER_CRASHED, and the exit code
is 0.
"""

from __future__ import annotations

import signal
import time

import pytest
from apps.recovery import create_app
from e2e_harness import Db, StartWorker, WorkerProcess, producer_app, wait_until
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from horsies.results import LibraryErrorCode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


app = producer_app(create_app)


def test_sigterm_finishes_running_task_and_releases_claims(
    start_worker: StartWorker, app: Horsies, db: Db
) -> None:
    worker = start_worker("recovery", "--processes", "1", "--shutdown-timeout", "30")
    running = app.tasks["rec.sleep"].send(2)
    db.wait_status(running.task_id, "RUNNING")
    prefetched = [app.tasks["rec.add"].send(i, i) for i in range(2)]
    for handle in prefetched:
        db.wait_status(handle.task_id, "CLAIMED")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0

    row = db.task(running.task_id)
    assert row["status"] == "COMPLETED"
    assert task_result_from_json(row["result"]).unwrap() == 2
    for handle in prefetched:
        released = db.task(handle.task_id)
        assert released["status"] == "PENDING"
        assert released["claimed_by_worker_id"] is None
    assert "Released 2 unstarted claimed task(s)" in worker.output()


def test_task_outliving_the_shutdown_timeout_is_terminated(
    start_worker: StartWorker, app: Horsies, db: Db
) -> None:
    # SIGINT behaves like SIGTERM. The tasks left PENDING by the previous test run first.
    worker, task_id = _running_a_long_task(start_worker, app, db, shutdown_timeout="1")
    started = time.monotonic()
    worker.send_signal(signal.SIGINT)
    assert worker.wait_exit(30) == 0
    assert time.monotonic() - started < 15
    row = db.task(task_id)
    assert row["status"] == "FAILED"
    error = task_result_from_json(row["result"]).unwrap_err()
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED
    assert "shutdown" in row["failed_reason"]
    assert "after the shutdown timeout (1s)" in row["failed_reason"]


def test_a_second_interrupt_says_so_in_the_reason(
    start_worker: StartWorker, app: Horsies, db: Db
) -> None:
    """Ctrl+C twice: the task is stopped because of the second one, not a timeout (30 s here)."""
    worker, task_id = _running_a_long_task(start_worker, app, db, shutdown_timeout="30")
    worker.send_signal(signal.SIGINT)
    wait_until(lambda: "Stop requested" in worker.output(), 30, "the first stop to be seen")
    worker.send_signal(signal.SIGINT)
    assert worker.wait_exit(30) == 0
    reason = db.task(task_id)["failed_reason"]
    assert "asked to stop a second time" in reason, reason
    assert "shutdown timeout" not in reason


def _running_a_long_task(
    start_worker: StartWorker, app: Horsies, db: Db, *, shutdown_timeout: str
) -> tuple[WorkerProcess, str]:
    """A one-process worker with ``--shutdown-timeout``, running a 60 s task (its id)."""
    worker = start_worker("recovery", "--processes", "1", "--shutdown-timeout", shutdown_timeout)
    running = app.tasks["rec.sleep"].send(60)
    db.wait_status(running.task_id, "RUNNING", timeout=30)
    return worker, running.task_id
