"""Running a task function, and the text of an exception as error results quote it.

`run_task_function` (and `run_task_coroutine` for an ``async def`` task) serves direct calls of a
task function and worker children alike, so both turn an exception or a wrong return value into
the same error result. It takes any object shaped like a
`TaskFunction` (`RunnableTask`), so this module stays below the class that calls it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from horsies.errors import HorsiesError, WorkflowContextMissingIdError
from horsies.failures import failure
from horsies.results import LibraryErrorCode, TaskError, TaskResult

__all__ = [
    "RunnableTask",
    "exception_text",
    "run_task_coroutine",
    "run_task_function",
    "safe_text",
]


class RunnableTask(Protocol):
    """What `run_task_function` uses of a task function (a `TaskFunction` has all of it)."""

    __name__: str
    task_name: str
    _original_fn: Callable[..., Any]

    def validate_result(self, result: TaskResult[Any, Any]) -> TaskResult[Any, Any]:
        """The result itself when it matches the declared types, else a mismatch error."""
        ...


def exception_text(exc: BaseException) -> str:
    """One-line text of an exception for result messages.

    `str()` of a `HorsiesError` is its multi-line rendering; messages use its code, message,
    notes and help: a refused send's handle must say what to do as well as the log does.
    """
    if isinstance(exc, HorsiesError):
        parts = [exc.message, *exc.notes]
        if exc.help_text:
            parts.append(f"help: {exc.help_text}")
        text = "; ".join(parts)
        return text if exc.code is None else f"{exc.code.value}: {text}"
    return safe_text(exc, str)


def safe_text(value: object, render: Callable[[object], str] = repr) -> str:
    """`render(value)`, or a placeholder when that raises: building an error result must not fail
    because of the very object it reports (an exception whose `__str__` raises, say)."""
    try:
        return render(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def run_task_function(
    task_fn: RunnableTask, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> TaskResult[Any, TaskError]:
    """Run a task function and turn every outcome into a `TaskResult`.

    Used by direct calls and by worker children. A returned `TaskResult` is checked against the
    declared types (`RETURN_TYPE_MISMATCH` on failure); a raised exception becomes
    `UNHANDLED_EXCEPTION` (with the exception object and `data={"exception_type": ...}`), except
    `WorkflowContextMissingIdError`, which becomes `WORKFLOW_CTX_MISSING_ID`; a return value that
    is not a `TaskResult` becomes `TASK_EXCEPTION`. Only `KeyboardInterrupt` propagates.
    """
    fn = task_fn._original_fn  # pyright: ignore[reportPrivateUsage]
    try:
        # Typed as object: the function may break its annotation and return anything.
        returned = typing.cast(object, fn(*args, **kwargs))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return _raised(task_fn, exc)
    return _returned(task_fn, returned)


async def run_task_coroutine(
    task_fn: RunnableTask, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> TaskResult[Any, TaskError]:
    """`run_task_function` for an ``async def`` task: await it, with the same outcomes.

    A cancellation of the awaiting task propagates (whoever cancelled it decides what the run
    became); a `CancelledError` the task raises of its own accord is an exception like any other.
    """
    # Here, not at the top: a worker child that never runs an async task never loads asyncio.
    import asyncio

    fn = task_fn._original_fn  # pyright: ignore[reportPrivateUsage]
    try:
        returned = typing.cast(object, await fn(*args, **kwargs))
    except KeyboardInterrupt:
        raise
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        return _raised(task_fn, exc)
    except BaseException as exc:
        return _raised(task_fn, exc)
    return _returned(task_fn, returned)


def _raised(task_fn: RunnableTask, exc: BaseException) -> TaskResult[Any, TaskError]:
    exc_type = type(exc).__name__
    if isinstance(exc, WorkflowContextMissingIdError):
        # A lookup by a node without an id is a workflow wiring mistake, not a task bug.
        return failure(
            LibraryErrorCode.WORKFLOW_CTX_MISSING_ID,
            f"Task {task_fn.__name__}: {exception_text(exc)}",
            {"exception_type": exc_type},
            exception=exc,
        )
    return failure(
        LibraryErrorCode.UNHANDLED_EXCEPTION,
        f"Unhandled exception in task {task_fn.__name__}: {exc_type}: {exception_text(exc)}",
        {"exception_type": exc_type},
        exception=exc,
    )


def _returned(task_fn: RunnableTask, returned: object) -> TaskResult[Any, TaskError]:
    if isinstance(returned, TaskResult):
        return task_fn.validate_result(typing.cast("TaskResult[Any, Any]", returned))
    if inspect.iscoroutine(returned):
        # Never awaited: close it so Python does not warn about it.
        returned.close()
    returned_type = type(returned).__name__
    return failure(
        LibraryErrorCode.TASK_EXCEPTION,
        f"Task {task_fn.__name__} returned {returned_type} instead of TaskResult",
        {"task_name": task_fn.task_name, "returned_type": returned_type},
    )
