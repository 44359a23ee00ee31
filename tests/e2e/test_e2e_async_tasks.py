"""``async def`` tasks on a real worker: results, failures, retries, send_many, schedule and a
workflow that mixes sync and async nodes; the child keeps one event loop between tasks."""

from __future__ import annotations

import time

import pytest
from apps.basic import create_app
from e2e_harness import Db, WorkerProcess, producer_app, worker_fixture
from horsies import TaskNode
from horsies.app import Horsies
from horsies.results import LibraryErrorCode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 20_000

app = producer_app(create_app)
worker = worker_fixture("basic", "--processes", "1")


def test_async_tasks_run_and_return(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    handles = [app.tasks["e2e.async_add"].send(i, 1) for i in range(5)]
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in handles] == [1, 2, 3, 4, 5]
    assert db.task(handles[0].task_id)["status"] == "COMPLETED"
    many = app.tasks["e2e.async_add"].send_many([(1, 2), {"a": 3, "b": 4}])
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in many] == [3, 7]


def test_a_child_keeps_one_event_loop(worker: WorkerProcess, app: Horsies) -> None:
    first = app.tasks["e2e.async_loop_id"].send().get(timeout_ms=GET_MS).unwrap()
    second = app.tasks["e2e.async_loop_id"].send().get(timeout_ms=GET_MS).unwrap()
    assert first == second  # one child (--processes 1), one loop


def test_an_async_failure_is_retried_per_policy(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = app.tasks["e2e.async_flaky"].send()
    assert handle.get(timeout_ms=GET_MS).unwrap() == 2
    assert db.task(handle.task_id)["retry_count"] == 1


def test_an_async_task_that_raises_fails_with_its_exception(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = app.tasks["e2e.async_add"].send("a", None)
    error = handle.get(timeout_ms=GET_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.UNHANDLED_EXCEPTION
    assert "TypeError" in (error.message or "")


def test_a_scheduled_async_task_waits_then_runs(worker: WorkerProcess, app: Horsies) -> None:
    sent = time.time()
    handle = app.tasks["e2e.async_add"].schedule(1.0, 20, 22)
    assert handle.get(timeout_ms=GET_MS).unwrap() == 42
    assert time.time() - sent >= 1.0


def test_a_workflow_mixes_sync_and_async_nodes(worker: WorkerProcess, app: Horsies) -> None:
    first = TaskNode(fn=app.tasks["e2e.add"], args=(2, 3))
    second = TaskNode(
        fn=app.tasks["e2e.async_double"], waits_for=[first], args_from={"value": first}
    )
    third = TaskNode(fn=app.tasks["e2e.async_add"], args=(1, 1))
    spec = app.workflow("mixed_kinds", [first, second, third], output=second)
    assert spec.start().get(timeout_ms=GET_MS).unwrap() == 10


def test_async_tasks_run_side_by_side_in_one_child(worker: WorkerProcess, app: Horsies) -> None:
    """Ten tasks that each sleep 1 s, on one child (default --async-concurrency 10): they all
    run at once, so every one started before any ended."""
    handles = app.tasks["e2e.async_nap"].send_many([(1.0,)] * 10)
    runs = [h.get(timeout_ms=GET_MS).unwrap() for h in handles]
    assert len({int(pid) for pid, _, _ in runs}) == 1
    last_start = max(started for _, started, _ in runs)
    first_end = min(ended for _, _, ended in runs)
    assert last_start < first_end, runs


def test_a_sync_task_waits_for_a_child_free_of_async_ones(
    worker: WorkerProcess, app: Horsies
) -> None:
    naps = app.tasks["e2e.async_nap"].send_many([(0.5,)] * 3)
    stamp = app.tasks["e2e.stamp"].send()
    ran_at = stamp.get(timeout_ms=GET_MS).unwrap()
    ends = [h.get(timeout_ms=GET_MS).unwrap()[2] for h in naps]
    # One child: the def task ran alone, before or after the async ones, never among them.
    assert ran_at >= max(ends) or ran_at <= min(h.get().unwrap()[1] for h in naps)
