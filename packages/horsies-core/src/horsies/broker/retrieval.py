"""Result retrieval: reading a task's stored result and what a wait for it decides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Query
from horsies.codec import (
    task_result_from_json,
)
from horsies.results import LibraryErrorCode, TaskError, TaskResult

FALLBACK_POLL_S: Final = 5.0
"""Longest wait between two re-reads of a task row while waiting for its result."""


def not_found(task_id: str) -> TaskResult[Any, TaskError]:
    """TASK_NOT_FOUND result."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.TASK_NOT_FOUND,
            message=f"Task {task_id} not found in database",
            data={"task_id": task_id},
        )
    )


def cancelled(task_id: str) -> TaskResult[Any, TaskError]:
    """TASK_CANCELLED result."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.TASK_CANCELLED,
            message=f"Task {task_id} was cancelled before completion",
            data={"task_id": task_id},
        )
    )


def wait_timeout(task_id: str, timeout_ms: int | None) -> TaskResult[Any, TaskError]:
    """WAIT_TIMEOUT result after the caller's deadline."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.WAIT_TIMEOUT,
            message=(
                f"Timed out waiting for task {task_id} after {timeout_ms}ms. "
                "Task may still be running."
            ),
            data={"task_id": task_id, "timeout_ms": timeout_ms},
        )
    )


def broker_error(
    task_id: str, timeout_ms: int | None, exc: BaseException
) -> TaskResult[Any, TaskError]:
    """BROKER_ERROR result carrying the exception."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.BROKER_ERROR,
            message="Broker error while retrieving task result",
            data={"task_id": task_id, "timeout_ms": timeout_ms},
            exception=exc,
        )
    )


def _decode_stored(
    task_id: str, status: str, result: str | None, failed_reason: str | None
) -> TaskResult[Any, TaskError]:
    if result is not None:
        return task_result_from_json(result)
    # A finished row without a result was written outside the worker (user SQL, recovery).
    if status == "FAILED":
        return TaskResult(
            err=TaskError(
                error_code=LibraryErrorCode.WORKER_CRASHED,
                message=failed_reason or f"Task {task_id} failed without a stored result",
                data={"task_id": task_id},
            )
        )
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.RESULT_NOT_AVAILABLE,
            message="Result not available - task may not have been executed",
            data={"task_id": task_id},
        )
    )


def result_from_row(task_id: str, row: Sequence[Any] | None) -> TaskResult[Any, TaskError] | None:
    """Interpret a TASK_GET_RESULT row (02 §5 step 2): a final result, or None to keep waiting."""
    if row is None:
        return not_found(task_id)
    status, result, failed_reason = row[0], row[1], row[2]
    if status in ("COMPLETED", "FAILED"):
        return _decode_stored(task_id, status, result, failed_reason)
    if status == "CANCELLED":
        return cancelled(task_id)
    return None


def result_after_notification(
    task_id: str, row: Sequence[Any] | None, timeout_ms: int | None
) -> TaskResult[Any, TaskError]:
    """02 §5 step 5: the row re-read after its task_done notification (never None)."""
    final = result_from_row(task_id, row)
    if final is not None:
        return final
    status = row[0] if row is not None else "UNKNOWN"
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.WAIT_TIMEOUT,
            message=(
                f"Task {task_id} was notified as finished but its status is {status}. "
                "Task may still be running."
            ),
            data={"task_id": task_id, "timeout_ms": timeout_ms},
        )
    )


def get_result_query(task_id: str) -> Query:
    """The read of one task's status and result."""
    return Query(task_sql.TASK_GET_RESULT, {"id": task_id})


class WaitPlan:
    """Deadline bookkeeping of one result wait (02 §5): ``timeout_ms`` None or <= 0 = forever."""

    def __init__(self, timeout_ms: int | None, now: float) -> None:
        self.timeout_ms = timeout_ms
        self.deadline = (
            now + timeout_ms / 1000 if timeout_ms is not None and timeout_ms > 0 else None
        )

    def next_wait(self, now: float) -> float | None:
        """Seconds to wait before the next re-read, or None when the deadline has passed."""
        if self.deadline is None:
            return FALLBACK_POLL_S
        remaining = self.deadline - now
        if remaining <= 0:
            return None
        return min(FALLBACK_POLL_S, remaining)
