"""Result retrieval: reading a task's stored result, and waiting for it.

:func:`result_program` is what ``get_result`` / ``get_result_async`` (and so ``TaskHandle.get``) do:
read the row; if the task has not ended, listen for its ``task_done`` notification and read again
when it comes (or every few seconds), until the deadline. It never raises: every outcome is a
result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from horsies import failures
from horsies.broker.programs import Program, WaitPlan, run, wait_for
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Query, QueryResult, run_query
from horsies.broker.waiters import ResultWaiters
from horsies.codec import task_result_from_json
from horsies.results import LibraryErrorCode, TaskError, TaskResult

__all__ = ["result_after_notification", "result_from_row", "result_program"]


def _decode_stored(
    task_id: str, status: str, result: str | None, failed_reason: str | None
) -> TaskResult[Any, TaskError]:
    if result is not None:
        return task_result_from_json(result)
    # A finished row without a result was written outside the worker (user SQL, recovery).
    if status == "FAILED":
        return failures.failure(
            LibraryErrorCode.WORKER_CRASHED,
            failed_reason or f"Task {task_id} failed without a stored result",
            {"task_id": task_id},
        )
    return failures.result_not_available(task_id)


def result_from_row(task_id: str, row: Sequence[Any] | None) -> TaskResult[Any, TaskError] | None:
    """Interpret a task's status/result row: a final result, or None to keep waiting."""
    if row is None:
        return failures.task_not_found(task_id)
    status, result, failed_reason = row[0], row[1], row[2]
    if status in ("COMPLETED", "FAILED"):
        return _decode_stored(task_id, status, result, failed_reason)
    if status == "CANCELLED":
        return failures.task_cancelled(task_id)
    return None


def result_after_notification(
    task_id: str, row: Sequence[Any] | None, timeout_ms: int | None
) -> TaskResult[Any, TaskError]:
    """The row read again after its ``task_done`` notification (never None: a task notified as
    finished that is not is reported, not waited for)."""
    final = result_from_row(task_id, row)
    if final is not None:
        return final
    status = row[0] if row is not None else "UNKNOWN"
    return failures.failure(
        LibraryErrorCode.WAIT_TIMEOUT,
        f"Task {task_id} was notified as finished but its status is {status}. "
        "Task may still be running.",
        {"task_id": task_id, "timeout_ms": timeout_ms},
    )


def _read(task_id: str, deadline: float | None) -> Program[Sequence[Any] | None]:
    res: QueryResult = yield from run(
        run_query(Query(task_sql.TASK_GET_RESULT, {"id": task_id})),
        "get_result",
        deadline=deadline,
    )
    return res.rows[0] if res.rows else None


def result_program(
    waiters: ResultWaiters, task_id: str, timeout_ms: int | None
) -> Program[TaskResult[Any, TaskError]]:
    """Wait for a task's result and return it; ``timeout_ms`` None or 0 waits forever.

    Outcomes: the task's own result, ``TASK_NOT_FOUND``, ``TASK_CANCELLED``, ``WAIT_TIMEOUT`` at the
    deadline, ``BROKER_ERROR`` when the database fails (and stays out of reach until the
    deadline). No connection is held while waiting."""
    plan = WaitPlan(timeout_ms, time.monotonic())

    def read_final() -> Program[TaskResult[Any, TaskError] | None]:
        return result_from_row(task_id, (yield from _read(task_id, plan.deadline)))

    def after_notification() -> Program[TaskResult[Any, TaskError]]:
        row = yield from _read(task_id, plan.deadline)
        return result_after_notification(task_id, row, timeout_ms)

    try:
        final = yield from wait_for(waiters, task_id, read_final, plan, after_notification)
    except Exception as exc:
        return failures.broker_error(task_id, timeout_ms, exc)
    return final if final is not None else failures.wait_timeout(task_id, timeout_ms)
