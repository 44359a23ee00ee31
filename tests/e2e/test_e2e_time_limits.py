"""Time limits on a real worker: a def task past its limit has its child stopped and replaced, an
async task past its limit is cancelled while its neighbours go on; both end TASK_TIMEOUT, which
auto_retry_for can name."""

from __future__ import annotations

import time

import pytest
from apps.basic import create_app
from e2e_harness import Db, WorkerProcess, producer_app, wait_until, worker_fixture
from horsies.app import Horsies
from horsies.results import LibraryErrorCode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 30_000

app = producer_app(create_app)
worker = worker_fixture("basic", "--processes", "2")


def test_a_def_task_past_its_limit_is_stopped(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    started = time.monotonic()
    handle = app.tasks["e2e.sync_limited"].send(30.0)
    error = handle.get(timeout_ms=GET_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.TASK_TIMEOUT
    assert "ran longer than its time limit (1s)" in (error.message or "")
    assert time.monotonic() - started < 15
    row = db.task(handle.task_id)
    assert row["status"] == "FAILED"
    wait_until(lambda: "task_timed_out: " + handle.task_id in worker.output(), 10, "the log line")
    # The stopped child is replaced: the worker again runs two tasks at once.
    wait_until(lambda: "child_respawned:" in worker.output(), 30, "a replacement child")
    naps = [app.tasks["e2e.sleep"].send(0.5) for _ in range(2)]
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in naps] == [0.5, 0.5]


def test_a_def_task_within_its_limit_completes(worker: WorkerProcess, app: Horsies) -> None:
    assert app.tasks["e2e.sync_limited"].send(0.1).get(timeout_ms=GET_MS).unwrap() == 0.1


def test_an_async_task_past_its_limit_is_cancelled_alone(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    slow = app.tasks["e2e.async_limited"].send(30.0)
    wait_until(lambda: db.task(slow.task_id)["status"] == "RUNNING", 10, "the slow task running")
    neighbours = app.tasks["e2e.async_nap"].send_many([(1.5,)] * 3)
    error = slow.get(timeout_ms=GET_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.TASK_TIMEOUT
    runs = [h.get(timeout_ms=GET_MS).unwrap() for h in neighbours]
    assert all(len(run) == 3 for run in runs)  # each ran to its end


def test_a_timeout_named_in_auto_retry_for_is_retried(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = app.tasks["e2e.limited_then_quick"].send()
    assert handle.get(timeout_ms=GET_MS).unwrap() == 2
    assert db.task(handle.task_id)["retry_count"] == 1


def test_a_send_can_carry_its_own_limit(worker: WorkerProcess, app: Horsies) -> None:
    longer = app.tasks["e2e.sync_limited"].with_options(time_limit_s=10.0).send(1.5)
    assert longer.get(timeout_ms=GET_MS).unwrap() == 1.5
    shorter = app.tasks["e2e.sleep"].with_options(time_limit_s=0.5).send(20.0)
    assert shorter.get(timeout_ms=GET_MS).unwrap_err().error_code == LibraryErrorCode.TASK_TIMEOUT


def test_an_async_task_blocking_its_loop_past_its_limit_is_stopped(
    worker: WorkerProcess, app: Horsies
) -> None:
    """Its child cannot cancel it (no await): the worker stops the child a grace period later."""
    started = time.monotonic()
    handle = app.tasks["e2e.async_blocking"].send(60.0)
    error = handle.get(timeout_ms=GET_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.TASK_TIMEOUT
    assert time.monotonic() - started < 20
