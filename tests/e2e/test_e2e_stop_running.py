"""Stopping a running task with ``TaskHandle.cancel()``, on a real worker.

A running def task's child is stopped and replaced; a running async task is cancelled at its next
await while its neighbours go on; either ends CANCELLED once, never retried. The race with the
task's own end follows one rule: an ok result that reached the database first is kept, anything
else ends CANCELLED (checked over repeated rounds).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from apps.basic import create_app
from e2e_harness import Db, WorkerProcess, producer_app, wait_until, worker_fixture
from horsies.app import Horsies
from horsies.results import LibraryErrorCode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GET_MS = 30_000

app = producer_app(create_app)
worker = worker_fixture("basic", "--processes", "2")


def _running(db: Db, task_id: str) -> None:
    wait_until(lambda: db.task(task_id)["status"] == "RUNNING", 15, f"{task_id} running")


def test_cancel_stops_a_running_def_task(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    handle = app.tasks["e2e.sleep"].send(60.0)
    _running(db, handle.task_id)
    assert handle.cancel() is True
    error = handle.get(timeout_ms=GET_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.TASK_CANCELLED
    row = db.task(handle.task_id)
    assert (row["status"], row["retry_count"]) == ("CANCELLED", 0)
    assert row["cancel_requested_at"] is not None
    wait_until(lambda: "child_respawned:" in worker.output(), 30, "a replacement child")
    assert app.tasks["e2e.add"].send(1, 2).get(timeout_ms=GET_MS).unwrap() == 3


def test_cancel_stops_a_running_async_task_alone(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    doomed = app.tasks["e2e.async_nap"].send(60.0)
    _running(db, doomed.task_id)
    neighbours = app.tasks["e2e.async_nap"].send_many([(1.0,)] * 3)

    async def cancel() -> bool:
        return await doomed.cancel_async()

    assert asyncio.run(cancel()) is True
    assert doomed.get(timeout_ms=GET_MS).unwrap_err().error_code == LibraryErrorCode.TASK_CANCELLED
    assert db.task(doomed.task_id)["status"] == "CANCELLED"
    assert all(len(h.get(timeout_ms=GET_MS).unwrap()) == 3 for h in neighbours)
    # Its child was not stopped: no replacement child after the stop.
    output = worker.output()
    assert f"task_stopping: {doomed.task_id}" in output
    assert "child_respawned:" not in output.split(f"task_stopping: {doomed.task_id}")[-1]


def test_cancel_of_an_ended_task_changes_nothing(worker: WorkerProcess, app: Horsies) -> None:
    handle = app.tasks["e2e.add"].send(2, 2)
    assert handle.get(timeout_ms=GET_MS).unwrap() == 4
    assert handle.cancel() is False


ROUNDS = 10


@pytest.mark.parametrize("task_name", ["e2e.sleep", "e2e.async_nap"])
def test_a_stop_racing_the_end_keeps_one_outcome(
    worker: WorkerProcess, app: Horsies, db: Db, task_name: str
) -> None:
    """Cancel a 0.3 s task from mid-run to just after its end: each ends COMPLETED with its
    result or CANCELLED, exactly once, never retried, and a later read says the same."""
    ends: dict[str, int] = {"COMPLETED": 0, "CANCELLED": 0}
    for round_ in range(ROUNDS):
        handle = app.tasks[task_name].send(0.3)
        _running(db, handle.task_id)
        # The stimulus, not a wait for a condition: the moment of the cancel moves across the
        # task's end, round by round.
        time.sleep(0.1 + 0.04 * round_)
        handle.cancel()
        result = handle.get(timeout_ms=GET_MS)
        row = db.task(handle.task_id)
        assert row["retry_count"] == 0, row
        if result.is_ok():
            assert row["status"] == "COMPLETED", row
        else:
            assert result.unwrap_err().error_code == LibraryErrorCode.TASK_CANCELLED
            assert row["status"] == "CANCELLED", row
        ends[row["status"]] += 1
        assert db.task(handle.task_id)["status"] == row["status"]
    print(f"\n[stop-race:{task_name}] {ends}")
    assert sum(ends.values()) == ROUNDS


def test_a_stopped_task_run_again_runs_to_its_end(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = app.tasks["e2e.async_nap"].send(1.0)
    _running(db, handle.task_id)
    assert handle.cancel()
    assert handle.get(timeout_ms=GET_MS).unwrap_err().error_code == LibraryErrorCode.TASK_CANCELLED
    assert handle.retry()
    assert len(handle.get(timeout_ms=GET_MS).unwrap()) == 3
    assert db.task(handle.task_id)["cancel_requested_at"] is None


def test_waiters_wake_when_a_stop_ends_a_run(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    """get() returns as soon as the stopped run ends (task_done), not at its next re-read."""
    handle = app.tasks["e2e.async_nap"].send(60.0)
    _running(db, handle.task_id)
    assert handle.cancel()
    started = time.monotonic()
    assert handle.get(timeout_ms=GET_MS).is_err()
    assert time.monotonic() - started < 3.0
