"""Every error result horsies makes itself, built here.

A task's own code returns its errors; the library makes the others: a result that cannot be had
(``TASK_NOT_FOUND``, ``WAIT_TIMEOUT``, ``BROKER_ERROR``), a task that never ran or died
(``TASK_CANCELLED``, ``WORKER_CRASHED``), a send that wrote nothing, an exception or a wrong
return value turned into a result, stored data that cannot be read back. :func:`failure` builds
each of them; the functions below it name the ones made in several places, so their messages and
data stay the same wherever they come from. This module sits below the codec (which reports
undecodable results with it), so encoding a failure is the caller's step.
"""

from __future__ import annotations

from typing import Any

from horsies.results import LibraryErrorCode, TaskError, TaskResult

__all__ = [
    "broker_error",
    "failure",
    "result_not_available",
    "task_cancelled",
    "task_not_found",
    "wait_timeout",
]


def failure(
    code: LibraryErrorCode | str,
    message: str,
    data: Any = None,
    *,
    exception: BaseException | None = None,
) -> TaskResult[Any, TaskError]:
    """An err result with a `TaskError` of ``code``, ``message``, ``data`` and ``exception``."""
    return TaskResult(
        err=TaskError(error_code=code, message=message, data=data, exception=exception)
    )


def task_not_found(task_id: str) -> TaskResult[Any, TaskError]:
    """No task has this id."""
    return failure(
        LibraryErrorCode.TASK_NOT_FOUND,
        f"Task {task_id} not found in database",
        {"task_id": task_id},
    )


def task_not_committed(task_id: str) -> TaskResult[Any, TaskError]:
    """No task has this id, and it was sent within the caller's transaction."""
    return failure(
        LibraryErrorCode.TASK_NOT_FOUND,
        f"Task {task_id} not found in database: it was sent within your transaction, which has "
        "not committed yet (get() sees the task once it has) or was rolled back",
        {"task_id": task_id, "sent_within_transaction": True},
    )


def task_cancelled(task_id: str) -> TaskResult[Any, TaskError]:
    """The task was cancelled before it ran."""
    return failure(
        LibraryErrorCode.TASK_CANCELLED,
        f"Task {task_id} was cancelled before completion",
        {"task_id": task_id},
    )


def result_not_available(task_id: str) -> TaskResult[Any, TaskError]:
    """A finished task has no stored result (written outside the worker), or a handle has no
    broker to ask."""
    return failure(
        LibraryErrorCode.RESULT_NOT_AVAILABLE,
        "Result not available - task may not have been executed",
        {"task_id": task_id},
    )


def wait_timeout(task_id: str, timeout_ms: int | None) -> TaskResult[Any, TaskError]:
    """A result wait reached its deadline; the task may still finish."""
    return failure(
        LibraryErrorCode.WAIT_TIMEOUT,
        f"Timed out waiting for task {task_id} after {timeout_ms}ms. Task may still be running.",
        {"task_id": task_id, "timeout_ms": timeout_ms},
    )


def broker_error(
    task_id: str, timeout_ms: int | None, exc: BaseException
) -> TaskResult[Any, TaskError]:
    """A result could not be read from the database."""
    return failure(
        LibraryErrorCode.BROKER_ERROR,
        "Broker error while retrieving task result",
        {"task_id": task_id, "timeout_ms": timeout_ms},
        exception=exc,
    )
