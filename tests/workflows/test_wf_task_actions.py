"""Operator actions on tasks (beyond the reference): `TaskHandle.cancel()` / `retry()` and their
async twins, on plain tasks and on a workflow node's task."""

from __future__ import annotations

import time

import psycopg
import pytest
import wf_child_app as wfc
from horsies import LibraryErrorCode, WorkflowStatus, WorkflowTaskStatus, start_workflow
from horsies.broker import PostgresBroker
from horsies.tasks.handle import TaskHandle
from horsies.workflows.nodes import TaskNode
from psycopg.rows import dict_row
from wf_exchange import app_broker_fixture

pytestmark = pytest.mark.timeout(60)


broker = app_broker_fixture(wfc.app)


def _sql(broker: PostgresBroker, query: str, *params: object) -> list[dict[str, object]]:
    with psycopg.connect(broker.config.conninfo, autocommit=True) as conn:
        cursor = conn.cursor(row_factory=dict_row)
        cursor.execute(query.encode(), params)
        return list(cursor.fetchall()) if cursor.description else []


def test_cancel_a_pending_task_wakes_its_waiter_and_is_final(broker: PostgresBroker) -> None:
    handle: TaskHandle[str] = TaskHandle(broker.enqueue("wfchild.step", ("x",)), broker=broker)
    assert handle.cancel() is True
    started = time.monotonic()
    result = handle.get(timeout_ms=10_000)
    assert result.err_value.error_code == LibraryErrorCode.TASK_CANCELLED
    assert time.monotonic() - started < 4  # woken by task_done, not by the 5 s fallback poll
    assert handle.cancel() is False


def test_cancel_of_a_running_plain_task_asks_its_worker_to_stop(broker: PostgresBroker) -> None:
    task_id = broker.enqueue("wfchild.step", ("x",))
    _sql(
        broker,
        "UPDATE horsies_tasks SET status = 'RUNNING', started_at = now(), claimed_at = now(), "
        "claimed_by_worker_id = 'w' WHERE id = %s",
        task_id,
    )
    assert TaskHandle(task_id, broker=broker).cancel() is True
    row = _sql(
        broker, "SELECT status, cancel_requested_at FROM horsies_tasks WHERE id = %s", task_id
    )
    # Still RUNNING: its worker ends it (see tests/e2e/test_e2e_stop_running.py).
    assert row[0]["status"] == "RUNNING"
    assert row[0]["cancel_requested_at"] is not None


@pytest.mark.parametrize("status", ["COMPLETED"])
def test_cancel_leaves_an_ended_task_alone(broker: PostgresBroker, status: str) -> None:
    task_id = broker.enqueue("wfchild.step", ("x",))
    _sql(
        broker,
        "UPDATE horsies_tasks SET status = %s, started_at = now(), completed_at = now(), "
        "claimed_at = now(), claimed_by_worker_id = 'w' WHERE id = %s",
        status,
        task_id,
    )
    assert TaskHandle(task_id, broker=broker).cancel() is False
    assert (
        _sql(broker, "SELECT status FROM horsies_tasks WHERE id = %s", task_id)[0]["status"]
        == status
    )


async def test_retry_a_failed_task_starts_it_afresh(broker: PostgresBroker) -> None:
    task_id = await broker.enqueue_async("wfchild.step", ("x",))
    _sql(
        broker,
        "UPDATE horsies_tasks SET status = 'FAILED', failed_at = now(), retry_count = 2, "
        "result = 'x', failed_reason = 'boom' WHERE id = %s",
        task_id,
    )
    handle: TaskHandle[str] = TaskHandle(task_id, broker=broker)
    assert await handle.retry_async() is True
    row = _sql(broker, "SELECT * FROM horsies_tasks WHERE id = %s", task_id)[0]
    assert (row["status"], row["retry_count"], row["result"], row["failed_at"]) == (
        "PENDING",
        0,
        None,
        None,
    )
    assert await handle.retry_async() is False  # PENDING has not ended
    assert await handle.cancel_async() is True
    assert await handle.retry_async() is True  # CANCELLED can run again too


def test_cancelling_a_workflow_nodes_task_fails_the_node_and_the_workflow_moves_on(
    broker: PostgresBroker,
) -> None:
    first = TaskNode(fn=wfc.step, args=("first",), node_id="first")
    second = TaskNode(fn=wfc.step, args=("second",), waits_for=[first], node_id="second")
    handle = start_workflow(wfc.app.workflow("wfact_chain", [first, second]), broker)
    task_id = _sql(
        broker,
        "SELECT task_id FROM horsies_workflow_tasks WHERE workflow_id = %s AND node_id = 'first'",
        handle.workflow_id,
    )[0]["task_id"]
    task: TaskHandle[str] = TaskHandle(str(task_id), broker=broker)

    assert task.cancel() is True
    assert task.retry() is False  # its node has ended: workflow tasks are not retried

    nodes = {t.node_id: t for t in handle.tasks()}
    assert nodes["first"].status is WorkflowTaskStatus.FAILED
    assert nodes["first"].result is not None
    assert nodes["first"].result.err_value.error_code == LibraryErrorCode.TASK_CANCELLED
    assert nodes["second"].status is WorkflowTaskStatus.SKIPPED
    assert handle.status() is WorkflowStatus.FAILED
