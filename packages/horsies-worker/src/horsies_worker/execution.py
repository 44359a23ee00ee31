"""Running one task in a worker child: whatever happens (a return value, an exception, undecodable
arguments, an unencodable result) becomes one encoded ``TaskResult``, so nothing a task does can
stop the child's loop.

Workflow nodes carry reserved kwargs (the context and meta payloads); :func:`execute_task` swaps
them for the ``workflow_ctx`` / ``workflow_meta`` parameters the function declares, and gives a
``task_ctx`` parameter the run's `TaskContext`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

from horsies.codec import (
    PayloadTooLargeError,
    SerializationError,
    args_from_json,
    check_payload_size,
    kwargs_from_json,
    task_result_to_json,
)
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.failures import failure
from horsies.results import LibraryErrorCode, TaskResult
from horsies.tasks.context import TASK_CTX_PARAM, TaskContext
from horsies.tasks.execution import run_task_function
from horsies.workflows.context import WorkflowContext, WorkflowMeta

from horsies_worker import run_spans

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.tasks.function import TaskFunction

__all__ = [
    "InjectionParams",
    "RunFacts",
    "error_result_json",
    "escaped_result",
    "execute_task",
    "execution_steps",
    "inject_workflow_params",
    "injection_params",
    "stopped_result_json",
    "timed_out_result_json",
]


# --------------------------------------------------------------------------------------------------
# Result encoding helpers


def error_result_json(
    code: LibraryErrorCode,
    message: str,
    data: Any = None,
    *,
    exception: BaseException | None = None,
) -> str:
    """Encode an err result the worker made itself. Never raises: what cannot be encoded is
    dropped (first the exception, then the data), and as a last resort a minimal hand-written
    document of the same shape is returned, so reporting an error never stops the worker."""
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
        f'"error_code":"{code!s}","message":"worker failed to encode its error",'
        '"data":null}}'
    )


def _exception_result_json(code: LibraryErrorCode, message: str, exc: BaseException) -> str:
    """Encode an err result that carries ``exc``."""
    return error_result_json(code, message, {"exception_type": type(exc).__name__}, exception=exc)


# --------------------------------------------------------------------------------------------------
# Injection: ``workflow_ctx`` and ``workflow_meta`` (see docs/workflows.md), ``task_ctx``


class RunFacts(NamedTuple):
    """What the worker knows about a run beyond its arguments; sent to the child with the task,
    and made a `TaskContext` only for a function that asks for one."""

    task_id: str
    queue_name: str
    priority: int
    retry_count: int
    max_retries: int
    sent_at: datetime
    time_limit_s: float | None = None
    task_options: str | None = None
    """The row's options text: the retry decision's input, and the trace carrier of its send."""

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> RunFacts:
        """The facts of a ``run`` message, whose ``sent_at`` is :func:`sent_at_micros` (an
        aware datetime costs several times more to pickle than an int, once per task)."""
        task_id, queue_name, priority, retry_count, max_retries, micros, limit, options = wire
        sent_at = _EPOCH + timedelta(microseconds=micros)
        return cls(task_id, queue_name, priority, retry_count, max_retries, sent_at, limit, options)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def sent_at_micros(sent_at: datetime) -> int:
    """``sent_at`` as whole microseconds since the epoch, as a ``run`` message carries it (the
    child's `TaskContext.sent_at` is the same instant, in UTC)."""
    return (sent_at - _EPOCH) // timedelta(microseconds=1)


CTX_PARAM = "workflow_ctx"
"""Parameter that receives a `WorkflowContext` when the node lists `workflow_ctx_from`."""
META_PARAM = "workflow_meta"
"""Parameter that receives a `WorkflowMeta` (None outside a workflow)."""

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True, slots=True)
class InjectionParams:
    """Which injected parameters a task function declares (by name, passable as a keyword)."""

    wants_ctx: bool
    wants_meta: bool
    wants_task_ctx: bool = False


@functools.cache
def injection_params(task_fn: TaskFunction[..., Any]) -> InjectionParams:
    """Inspect `task_fn`'s signature once per function (cached for the life of the child).

    A ``**kwargs`` catch-all does not count: only a parameter literally named ``workflow_ctx``,
    ``workflow_meta`` or ``task_ctx`` asks for an injection.
    """
    fn = task_fn._original_fn  # pyright: ignore[reportPrivateUsage]
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        # No introspectable signature (some builtins, C callables): nothing to inject into.
        return InjectionParams(wants_ctx=False, wants_meta=False)

    def declares(name: str) -> bool:
        parameter = parameters.get(name)
        return parameter is not None and parameter.kind in _KEYWORD_KINDS

    return InjectionParams(
        wants_ctx=declares(CTX_PARAM),
        wants_meta=declares(META_PARAM),
        wants_task_ctx=declares(TASK_CTX_PARAM),
    )


def _payload_mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SerializationError(f"workflow {what} payload must be a JSON object")
    return cast("dict[str, Any]", value)


def _workflow_meta(payload: object) -> WorkflowMeta:
    fields = _payload_mapping(payload, "meta")
    try:
        return WorkflowMeta(
            workflow_id=str(fields["workflow_id"]),
            task_index=int(fields["task_index"]),
            task_name=str(fields["task_name"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"invalid workflow meta payload: {exc!r}") from exc


def _workflow_context(payload: object) -> WorkflowContext:
    fields = _payload_mapping(payload, "context")
    results = _payload_mapping(fields.get("results", {}), "context results")
    summaries = _payload_mapping(fields.get("summaries", {}), "context summaries")
    try:
        return WorkflowContext.from_serialized(
            workflow_id=str(fields["workflow_id"]),
            task_index=int(fields["task_index"]),
            task_name=str(fields["task_name"]),
            results_by_id=results,
            summaries_by_id=summaries,
        )
    except SerializationError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"invalid workflow context payload: {exc!r}") from exc


def inject_workflow_params(
    task_fn: TaskFunction[..., Any], kwargs: dict[str, Any], run: RunFacts | None = None
) -> None:
    """Replace the engine's reserved kwargs with the parameters the function asks for (in place).

    The reserved keys are always removed, so they never reach the task. ``workflow_ctx`` is set
    only when the function declares it and the node carries a context; ``workflow_meta`` is set
    when the function declares it and the caller did not pass one: a `WorkflowMeta` inside a
    workflow, None outside, so one task function serves both. ``task_ctx`` is set, from ``run``,
    when the function declares it.

    Raises:
        SerializationError: a reserved payload is malformed.
    """
    ctx_payload = kwargs.pop(CTX_KEY, None)
    meta_payload = kwargs.pop(META_KEY, None)
    wanted = injection_params(task_fn)
    if wanted.wants_ctx and ctx_payload is not None:
        kwargs[CTX_PARAM] = _workflow_context(ctx_payload)
    meta = None
    if (wanted.wants_meta or wanted.wants_task_ctx) and meta_payload is not None:
        meta = _workflow_meta(meta_payload)
    if wanted.wants_meta and META_PARAM not in kwargs:
        kwargs[META_PARAM] = meta
    if wanted.wants_task_ctx and run is not None:
        kwargs[TASK_CTX_PARAM] = TaskContext(
            task_id=run.task_id,
            task_name=task_fn.task_name,
            queue_name=run.queue_name,
            priority=run.priority,
            retry_count=run.retry_count,
            max_retries=run.max_retries,
            sent_at=run.sent_at,
            workflow_id=meta.workflow_id if meta is not None else None,
            workflow_task_index=meta.task_index if meta is not None else None,
        )


_Call = tuple["TaskFunction[..., Any]", list[Any], dict[str, Any]]
"""The call of the task function an execution asks its driver to make."""


def execution_steps(
    app: Horsies,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    run: RunFacts | None,
) -> Generator[_Call, object, tuple[str, bool]]:
    """The steps of one execution around the call, written once for the sync driver
    (:func:`execute_task`) and the async one (``async_runner.execute_task_async``): it yields
    the call to make and is sent back what the call returned."""
    # Resolve.
    try:
        task_fn = app.tasks[task_name]
    except BaseException as exc:
        return (
            error_result_json(
                LibraryErrorCode.WORKER_RESOLUTION_ERROR,
                f"Failed to resolve {task_name}: {exc}",
                {"task_name": task_name},
            ),
            False,
        )
    # Decode. Malformed JSON surfaces as ValueError (orjson.JSONDecodeError); it is the same
    # failure as an undecodable value, so both map to WORKER_SERIALIZATION_ERROR.
    try:
        args = args_from_json(args_json)
        kwargs = kwargs_from_json(kwargs_json)
        inject_workflow_params(task_fn, kwargs, run)
    except (SerializationError, ValueError) as exc:
        return (
            error_result_json(LibraryErrorCode.WORKER_SERIALIZATION_ERROR, str(exc)),
            False,
        )
    # Call (the wrapper turns task exceptions into UNHANDLED_EXCEPTION).
    result = yield (task_fn, list(args), kwargs)
    if result is None:
        return (
            error_result_json(LibraryErrorCode.TASK_EXCEPTION, f"Task {task_name} returned None"),
            False,
        )
    typed = cast(
        "TaskResult[Any, Any]",
        result if isinstance(result, TaskResult) else TaskResult[Any, Any](ok=result),
    )
    # Encode (and keep within AppConfig.max_payload_bytes).
    try:
        encoded = task_result_to_json(typed)
        check_payload_size("task result", (encoded,), app.config.max_payload_bytes)
    except PayloadTooLargeError as exc:
        data = {"task_name": task_name, "size": exc.size, "limit": exc.limit}
        return (
            error_result_json(LibraryErrorCode.WORKER_SERIALIZATION_ERROR, str(exc), data),
            False,
        )
    except SerializationError as exc:
        return (error_result_json(LibraryErrorCode.WORKER_SERIALIZATION_ERROR, str(exc)), False)
    return encoded, typed.is_ok()


def timed_out_result_json(task_name: str, limit_s: float) -> str:
    """The ``TASK_TIMEOUT`` result of a run stopped at its time limit."""
    return error_result_json(
        LibraryErrorCode.TASK_TIMEOUT,
        f"Task {task_name} ran longer than its time limit ({limit_s:g}s) and was stopped",
        {"task_name": task_name, "time_limit_s": limit_s},
    )


def stopped_result_json(task_name: str) -> str:
    """The ``TASK_CANCELLED`` result of a run stopped at a ``cancel()`` request."""
    return error_result_json(
        LibraryErrorCode.TASK_CANCELLED,
        f"Task {task_name} was stopped while running: cancel() was called",
        {"task_name": task_name},
    )


def escaped_result(exc: BaseException) -> tuple[str, bool]:
    """The result of an execution that something escaped: ``TASK_EXCEPTION``."""
    return (
        _exception_result_json(
            LibraryErrorCode.TASK_EXCEPTION, f"{type(exc).__name__}: {exc}", exc
        ),
        False,
    )


def execute_task(
    app: Horsies,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    run: RunFacts | None = None,
) -> tuple[str, bool]:
    """Run one task in this process and return ``(result_json, ok)``.

    Steps: resolve the name in ``app.tasks`` (unknown → ``WORKER_RESOLUTION_ERROR``); decode the
    arguments and swap the workflow payloads for ``workflow_ctx`` / ``workflow_meta`` (and give
    ``task_ctx`` its context from ``run``) (``SerializationError`` or malformed JSON →
    ``WORKER_SERIALIZATION_ERROR``); call the task through ``run_task_function``, the wrapper
    of a direct call, so a task gives the same result in a worker as when called in-process
    (``async def`` tasks run through ``async_runner.execute_task_async`` instead); encode the
    ``TaskResult``
    (``SerializationError``, or a result above ``AppConfig.max_payload_bytes`` →
    ``WORKER_SERIALIZATION_ERROR``, anything else → ``TASK_EXCEPTION``).
    Any other exception escaping those steps, ``KeyboardInterrupt`` included, becomes
    ``TASK_EXCEPTION``. Never raises. With the ``otel`` extra the run is a span
    (`horsies_worker.run_spans`).
    """
    span = run_spans.start(task_name, run)
    outcome = _execute(app, task_name, args_json, kwargs_json, run)
    if span is not None and run is not None:
        run_spans.end(span, run, *outcome)
    return outcome


def _execute(
    app: Horsies,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    run: RunFacts | None,
) -> tuple[str, bool]:
    steps = execution_steps(app, task_name, args_json, kwargs_json, run)
    try:
        task_fn, args, kwargs = next(steps)
        steps.send(run_task_function(task_fn, args, kwargs))
    except StopIteration as done:
        return cast("tuple[str, bool]", done.value)
    except BaseException as exc:
        return escaped_result(exc)
    raise AssertionError("an execution yields one call")  # pragma: no cover
