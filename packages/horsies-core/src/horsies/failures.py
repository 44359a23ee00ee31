"""Every error result horsies makes itself, built here.

A task's own code returns its errors; the library makes the others: a result that cannot be had
(``TASK_NOT_FOUND``, ``WAIT_TIMEOUT``, ``BROKER_ERROR``), a task that never ran or died
(``TASK_CANCELLED``, ``WORKER_CRASHED``), a send that wrote nothing, an exception or a wrong
return value turned into a result. :func:`failure` builds each of them, and :func:`failure_json`
encodes one for storage without ever failing; the functions below it name the ones made in several
places, so their messages and data stay the same wherever they come from.
"""

from __future__ import annotations

from typing import Any

from horsies.codec import dumps_json, task_result_to_json
from horsies.results import LibraryErrorCode, TaskError, TaskResult

__all__ = [
    "broker_error",
    "error_json",
    "failure",
    "failure_json",
    "result_not_available",
    "task_cancelled",
    "task_not_found",
    "wait_timeout",
    "worker_crashed_json",
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


def failure_json(
    code: LibraryErrorCode | str,
    message: str,
    data: Any = None,
    *,
    exception: BaseException | None = None,
) -> str:
    """:func:`failure` encoded for storage. Never raises: what cannot be encoded is dropped (first
    the exception, then the data), and as a last resort a minimal document of the same shape is
    written by hand, so a library error never stops the code that reports it."""
    attempts: list[tuple[Any, BaseException | None]] = [(data, exception)]
    if exception is not None:
        attempts.append((data, None))
    if data is not None:
        attempts.append((None, None))
    for attempt_data, attempt_exception in attempts:
        try:
            return task_result_to_json(
                failure(code, message, attempt_data, exception=attempt_exception)
            )
        except Exception:
            continue
    return (
        '{"__task_result__":true,"ok":null,"err":{"__task_error__":true,'
        f'"error_code":"{code!s}","message":"failed to encode the error","data":null}}}}'
    )


def error_json(code: LibraryErrorCode | str, message: str, data: Any = None) -> str:
    """A `TaskError` alone (not wrapped in a result), encoded: a workflow's stored error."""
    return dumps_json(TaskError(error_code=code, message=message, data=data))


def task_not_found(task_id: str) -> TaskResult[Any, TaskError]:
    """No task has this id."""
    return failure(
        LibraryErrorCode.TASK_NOT_FOUND,
        f"Task {task_id} not found in database",
        {"task_id": task_id},
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


def worker_crashed_json(reason: str, data: Any) -> str:
    """``WORKER_CRASHED``, encoded: the process running the task died, or stopped reporting for
    longer than the stale threshold. ``data`` says which process and when."""
    return failure_json(LibraryErrorCode.WORKER_CRASHED, reason, data)
