"""The span of each send of a task function, with the ``otel`` extra (see `horsies.tracing`).

`traced_send` wraps a sending method of `TaskFunction`: the span starts before the send's checks
and ends when it returns; the send runs on a view of the task whose stored options carry the
span's context, so the worker's run span is its child. The handles say what to record: the task
id (the count of a batch), or the error of an ``"<error>"`` / ``"<suppressed>"`` handle. Without
the extra the methods are left unwrapped: a send does nothing more than before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from horsies import tracing
from horsies.config.queues import DEFAULT_QUEUE_NAME

if TYPE_CHECKING:
    from horsies.tasks.function import TaskFunction
    from horsies.tasks.handle import TaskHandle

__all__ = ["traced_send", "traced_send_async"]

P = ParamSpec("P")
F = TypeVar("F", bound="TaskFunction[Any, Any]")
R = TypeVar("R", bound="TaskHandle[Any] | list[TaskHandle[Any]]")


def _start(task: TaskFunction[Any, Any], operation: str) -> tracing.TaskSpan | None:
    return tracing.start_send(operation, task.task_name, task.task_queue_name or DEFAULT_QUEUE_NAME)


def _carrying(task: F, span: tracing.TaskSpan) -> F:
    carried = span.carry(task.task_options_json)
    # The view's sends store the carrier; the task's own options text stays as it is.
    return task if carried is None else task._carrying(carried)  # pyright: ignore[reportPrivateUsage]


def _record(span: tracing.TaskSpan, result: TaskHandle[Any] | list[TaskHandle[Any]]) -> None:
    handles: Sequence[TaskHandle[Any]] = result if isinstance(result, list) else [result]
    if not handles:
        return
    if handles[0].sent:
        span.sent([handle.task_id for handle in handles])
        return
    # An unsent handle's get() answers at once from the handle, with why nothing was written.
    error = handles[0].get().err
    if error is not None:
        span.failed(str(error.error_code), error.message or "")


def traced_send(
    operation: str,
) -> Callable[[Callable[Concatenate[F, P], R]], Callable[Concatenate[F, P], R]]:
    """Wrap a synchronous sending method in the span of ``operation`` (``send``, ``schedule``)."""

    def wrap(method: Callable[Concatenate[F, P], R]) -> Callable[Concatenate[F, P], R]:
        if not tracing.AVAILABLE:
            return method

        @functools.wraps(method)
        def traced(self: F, *args: P.args, **kwargs: P.kwargs) -> R:
            span = _start(self, operation)
            if span is None:
                return method(self, *args, **kwargs)
            with span:
                result = method(_carrying(self, span), *args, **kwargs)
                _record(span, result)
                return result

        return traced

    return wrap


def traced_send_async(
    operation: str,
) -> Callable[
    [Callable[Concatenate[F, P], Coroutine[Any, Any, R]]],
    Callable[Concatenate[F, P], Coroutine[Any, Any, R]],
]:
    """Async twin of `traced_send`: the span is current while the send is awaited."""

    def wrap(
        method: Callable[Concatenate[F, P], Coroutine[Any, Any, R]],
    ) -> Callable[Concatenate[F, P], Coroutine[Any, Any, R]]:
        if not tracing.AVAILABLE:
            return method

        @functools.wraps(method)
        async def traced(self: F, *args: P.args, **kwargs: P.kwargs) -> R:
            span = _start(self, operation)
            if span is None:
                return await method(self, *args, **kwargs)
            with span:
                result = await method(_carrying(self, span), *args, **kwargs)
                _record(span, result)
                return result

        return traced

    return wrap
