"""run_pending: the due tasks of an app run now, in the test's process, with a worker's outcomes
(results for get(), retries by the policy, workflows advanced)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from horsies import Horsies, TaskStatus
from horsies.testing import RanTask, run_pending, run_pending_async, sent_tasks
from orders_app import ADD_THEN_DOUBLE, add, add_async, double, flaky, place_order, send_receipt

pytestmark = pytest.mark.timeout(60)

RunPending = Callable[..., list[RanTask]]


def test_a_sync_task_runs_and_its_result_is_written(horsies_run_pending: RunPending) -> None:
    handle = add.send(2, 3)
    ran = horsies_run_pending()
    assert [(r.task_id, r.task_name, r.result.unwrap()) for r in ran] == [
        (handle.task_id, "orders.add", 5)
    ]
    assert handle.get(timeout_ms=1_000).unwrap() == 5
    (row,) = sent_tasks(add.app)
    assert row.status is TaskStatus.COMPLETED


def test_an_async_task_runs_on_an_event_loop(horsies_run_pending: RunPending) -> None:
    handle = add_async.send(4, 5)
    ran = horsies_run_pending()
    assert [r.result.unwrap() for r in ran] == [9]
    assert handle.get(timeout_ms=1_000).unwrap() == 9


async def test_run_pending_async_runs_on_the_callers_loop(horsies_app: Horsies) -> None:
    first = await add_async.send_async(1, 2)
    second = await add.send_async(3, 4)
    ran = await run_pending_async(horsies_app)
    assert {r.task_id: r.result.unwrap() for r in ran} == {first.task_id: 3, second.task_id: 7}
    assert (await first.get_async(timeout_ms=1_000)).unwrap() == 3


async def test_run_pending_refuses_a_running_loop(horsies_app: Horsies) -> None:
    with pytest.raises(RuntimeError, match="await run_pending_async"):
        run_pending(horsies_app)


def test_tasks_sent_by_tasks_run_in_the_next_round(horsies_run_pending: RunPending) -> None:
    placed = place_order.send(7)
    ran = horsies_run_pending()
    assert [r.task_name for r in ran] == ["orders.place", "orders.send_receipt"]
    receipt_id = placed.get(timeout_ms=1_000).unwrap()
    assert ran[1].task_id == receipt_id
    assert ran[1].result.unwrap() == "receipt 7 to buyer@example.org: 2 line(s)"
    assert {row.status for row in sent_tasks(send_receipt.app)} == {TaskStatus.COMPLETED}


def test_a_failure_is_retried_by_the_tasks_policy_once_due(
    horsies_app: Horsies, horsies_run_pending: RunPending
) -> None:
    handle = flaky.send()
    (first,) = horsies_run_pending()
    error = first.result.unwrap_err()
    assert (error.error_code, first.retry_in_s) == ("FLAKY", 1.0)
    (row,) = sent_tasks(horsies_app, name=flaky)
    assert row.status is TaskStatus.PENDING  # due again in a second: not run by this call

    deadline = time.monotonic() + 15
    retried: list[RanTask] = []
    while not retried:
        assert time.monotonic() < deadline, "the retry never became due"
        retried = horsies_run_pending()
        time.sleep(0.05)
    assert [(r.task_id, r.result.unwrap(), r.retry_in_s) for r in retried] == [
        (handle.task_id, 2, None)
    ]
    assert handle.get(timeout_ms=1_000).unwrap() == 2


def test_a_workflow_advances_to_its_next_node(horsies_run_pending: RunPending) -> None:
    workflow = ADD_THEN_DOUBLE.start()
    ran = horsies_run_pending()
    assert [(r.task_name, r.result.unwrap()) for r in ran] == [
        ("orders.add", 5),
        ("orders.double", 10),
    ]
    assert workflow.get(timeout_ms=1_000).unwrap() == 10


def test_the_same_workflow_starts_again_in_another_tests_database(
    horsies_run_pending: RunPending,
) -> None:
    """The spec built at import time asks the app for its broker at each start."""
    workflow = ADD_THEN_DOUBLE.start()
    assert [r.task_name for r in horsies_run_pending()] == ["orders.add", "orders.double"]
    assert workflow.get(timeout_ms=1_000).unwrap() == 10


def test_a_task_scheduled_for_later_is_left_alone(
    horsies_app: Horsies, horsies_run_pending: RunPending
) -> None:
    later = add.schedule(3_600, 1, 1)
    now = double.send(value=add(1, 2))
    ran = horsies_run_pending()
    assert [r.task_id for r in ran] == [now.task_id]
    statuses = {row.task_id: row.status for row in sent_tasks(horsies_app)}
    assert statuses == {later.task_id: TaskStatus.PENDING, now.task_id: TaskStatus.COMPLETED}


def test_nothing_due_runs_nothing(horsies_run_pending: RunPending) -> None:
    assert horsies_run_pending() == []


def test_a_queue_the_app_does_not_have_is_refused(horsies_run_pending: RunPending) -> None:
    with pytest.raises(ValueError, match="no queue 'emails'"):
        horsies_run_pending(queues=["emails"])
