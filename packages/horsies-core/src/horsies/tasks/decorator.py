"""Task functions: what `@app.task` returns, and how a task function is run.

A `TaskFunction` wraps the user's function. Calling it runs the function in-process
(`run_task_function`, also used by worker children); `send` / `send_async` / `schedule` /
`send_many` enqueue rows through the app's broker and never raise for runtime problems: failures
come back as `"<error>"` / `"<suppressed>"` handles (spec 02 §3-§4).

Everything a send needs that does not depend on the call (options JSON, retry count, expiry, queue)
is computed once at definition time, so the per-send Python work is a suppression check, a cheap
queue re-validation and the broker call.
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError

from horsies.errors import ErrorCode, HorsiesError, SourceLocation, TaskDefinitionError
from horsies.failures import failure
from horsies.locator import DYNAMIC_MODULE_PREFIX, module_name_for_path
from horsies.logs import get_logger
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tasks.handle import ERROR_TASK_ID, SUPPRESSED_TASK_ID, TaskHandle
from horsies.workflows.context import WorkflowContextMissingIdError
from horsies.workflows.engine import CTX_KEY, META_KEY

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker.postgres import PostgresBroker
    from horsies.retry import TaskOptions

__all__ = [
    "ERROR_TASK_ID",
    "KNOWN_TASK_OPTIONS",
    "SUPPRESSED_TASK_ID",
    "TaskFunction",
    "default_task_name",
    "define_task",
    "exception_text",
    "run_task_function",
    "task_origin",
]

P = ParamSpec("P")
T = TypeVar("T")

_logger = get_logger("tasks")
_NO_ADAPTER: Any = object()
_MAIN_MODULES = frozenset({"__main__", "__mp_main__"})
_Action = Literal["send", "schedule"]

SendManyCall = Mapping[str, Any] | tuple[Any, ...]
"""One call of `send_many`: a mapping of keyword arguments or a tuple of positional arguments."""

_ManyPrepared = tuple["PostgresBroker", str, int, list[tuple[tuple[Any, ...], dict[str, Any]]]]


def default_task_name(fn: Callable[..., Any]) -> str:
    """Name of a task defined without one: `"<module>.<qualname>"` (decision D4).

    The module is the function's `__module__`, except for files imported by path (synthetic
    `horsies._dynamic.*` modules), which are named through their package hierarchy so that
    producer, worker and children agree on the name.

    Raises:
        TaskDefinitionError: (E102) the function is defined in `__main__`, where no other
            process could import it under the same name.
    """
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    if module in _MAIN_MODULES or not module:
        raise TaskDefinitionError(
            f"cannot derive a task name for '{qualname}' defined in the __main__ module",
            code=ErrorCode.TASK_INVALID_OPTIONS,
        ).with_help(
            "workers import tasks by name, and __main__ differs in every process:\n"
            f'give the task an explicit name: @app.task("{qualname}")\n'
            "or move it into an importable module"
        )
    if module.startswith(DYNAMIC_MODULE_PREFIX):
        code = getattr(fn, "__code__", None)
        if code is not None:
            module = module_name_for_path(code.co_filename)
    return f"{module}.{qualname}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return (
            tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
        )
    return repr(tp).replace("typing.", "")


def _build_adapter(tp: Any) -> Any:
    """A TypeAdapter for `tp`, or `_NO_ADAPTER` for types that accept anything or cannot adapt."""
    if tp is Any or tp is object:
        return _NO_ADAPTER
    try:
        return TypeAdapter(tp, config=ConfigDict(arbitrary_types_allowed=True))
    except PydanticUserError:
        # Models, dataclasses and TypedDicts carry their own config and refuse an extra one.
        pass
    except Exception as exc:
        _logger.debug("no runtime return validation for %s: %s", _type_name(tp), exc)
        return _NO_ADAPTER
    try:
        return TypeAdapter(tp)
    except Exception as exc:
        _logger.debug("no runtime return validation for %s: %s", _type_name(tp), exc)
        return _NO_ADAPTER


def exception_text(exc: BaseException) -> str:
    """One-line text of an exception for result messages.

    `str()` of a `HorsiesError` is its multi-line rendering; messages use its message and notes.
    """
    if isinstance(exc, HorsiesError):
        return "; ".join([exc.message, *exc.notes])
    return _safe_text(exc, str)


def _safe_text(value: object, render: Callable[[object], str] = repr) -> str:
    """`render(value)`, or a placeholder when that raises: building an error result must not fail
    because of the very object it reports (an exception whose `__str__` raises, say)."""
    try:
        return render(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _error_handle(
    task_fn: TaskFunction[..., Any], prefix: str, exc: BaseException
) -> TaskHandle[Any]:
    """`"<error>"` handle for a send that failed before (or while) writing its row (02 §4)."""
    error = failure(
        LibraryErrorCode.UNHANDLED_EXCEPTION,
        f"{prefix}: {exception_text(exc)}",
        {"task_name": task_fn.task_name, "exception_type": type(exc).__name__},
        exception=exc,
    )
    return TaskHandle(ERROR_TASK_ID, result=error)


class TaskFunction(Generic[P, T]):
    """A registered task: call it to run in-process, `send()` it to run on a worker.

    Returned by `@app.task`; not constructed directly. Prefer `send()` from synchronous code and
    `await send_async()` from async code; use `schedule(delay_seconds, ...)` to make the task
    claimable later, and `send_many()` to enqueue many calls in one database statement.

    Attributes:
        task_name: the registered name.
        task_queue_name: the queue named in the decorator (None in DEFAULT mode).
        task_options: the validated `TaskOptions` (retry policy, auto_retry_for, good_until).
        task_options_json: `task_options` serialized as stored in the `task_options` column.
        app: the owning `Horsies` application.
    """

    def __init__(
        self,
        app: Horsies,
        fn: Callable[P, TaskResult[T, Any]],
        *,
        task_name: str,
        queue_name: str | None,
        options: TaskOptions,
        ok_type: Any,
        err_type: Any,
    ) -> None:
        self.app = app
        self._original_fn = fn
        self.task_name = task_name
        self.task_queue_name = queue_name
        self.task_options = options
        self.task_options_json: str = options.to_json()
        self.task_max_retries: int = (
            options.retry_policy.max_retries if options.retry_policy is not None else 0
        )
        self.task_good_until: datetime | None = options.good_until
        self._ok_type = ok_type
        self._err_type = err_type
        self._ok_adapter: Any = None
        self._err_adapter: Any = None
        self.__name__: str = getattr(fn, "__name__", task_name)
        self.__qualname__: str = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", __name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__annotations__ = dict(getattr(fn, "__annotations__", {}))
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        queue = self.task_queue_name or "default"
        return f"<TaskFunction {self.task_name!r} queue={queue!r}>"

    # -- direct execution -------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[T, TaskError]:
        """Run the task now, in this process (no database, no retries, no suppression check).

        Exceptions (except `KeyboardInterrupt`) become an `UNHANDLED_EXCEPTION` error result; a
        returned value that does not match the declared `TaskResult[T, E]` becomes
        `RETURN_TYPE_MISMATCH` (spec 02 §3, §6).
        """
        return run_task_function(self, args, kwargs)

    def _adapters(self) -> tuple[Any, Any]:
        ok_adapter = self._ok_adapter
        if ok_adapter is None:
            ok_adapter = self._ok_adapter = _build_adapter(self._ok_type)
        err_adapter = self._err_adapter
        if err_adapter is None:
            err_adapter = self._err_adapter = _build_adapter(self._err_type)
        return ok_adapter, err_adapter

    def validate_result(self, result: TaskResult[Any, Any]) -> TaskResult[Any, Any]:
        """Check a returned `TaskResult` against the declared `T` / `E` (lax mode).

        Returns `result` itself when it validates (coerced values are discarded), else an err
        `RETURN_TYPE_MISMATCH` result.
        """
        ok_adapter, err_adapter = self._adapters()
        if result.is_ok():
            variant, value, adapter, expected = "ok", result.ok, ok_adapter, self._ok_type
        else:
            variant, value, adapter, expected = "err", result.err, err_adapter, self._err_type
        if adapter is _NO_ADAPTER:
            return result
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            return self._mismatch(variant, value, expected, exc)
        except Exception as exc:
            # Not a verdict on the value (e.g. a forward reference pydantic cannot resolve): the
            # declared type cannot be checked, so results are kept as returned from now on.
            _logger.debug("cannot validate the result of %s: %s", self.task_name, exc)
            if variant == "ok":
                self._ok_adapter = _NO_ADAPTER
            else:
                self._err_adapter = _NO_ADAPTER
        return result

    def _mismatch(
        self, variant: str, value: object, expected: Any, exc: ValidationError
    ) -> TaskResult[Any, Any]:
        expected_name = _type_name(expected)
        actual = _safe_text(value)
        error = failure(
            LibraryErrorCode.RETURN_TYPE_MISMATCH,
            (
                f"Task {self.__name__} returned TaskResult({variant}={actual}) "
                f"but expected type {expected_name}"
            ),
            {
                "variant": variant,
                "expected_type": expected_name,
                "actual_value": actual,
                "validation_errors": exc.errors(
                    include_url=False, include_context=False, include_input=False
                ),
            },
            exception=exc,
        )
        return error

    # -- sending ----------------------------------------------------------------------------------

    def _suppressed_handle(self, action: _Action) -> TaskHandle[T]:
        _logger.warning(
            "Task %s suppressed during module import/discovery: %s", action, self.task_name
        )
        error = failure(
            LibraryErrorCode.SEND_SUPPRESSED,
            f"Task {action} suppressed during module import/discovery",
            {"task_name": self.task_name},
        )
        return TaskHandle(SUPPRESSED_TASK_ID, result=error)

    def _failed(self, action: _Action, exc: Exception, count: int = 1) -> list[TaskHandle[T]]:
        """The `"<error>"` handles of `count` calls whose rows could not be written."""
        verb = "schedule" if action == "schedule" else "enqueue"
        handle = _error_handle(self, f"Failed to {verb} task {self.__name__}", exc)
        return [handle for _ in range(count)]

    def send(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue the task for a worker and return its handle at once.

        Never raises for runtime problems: while sends are suppressed the handle's id is
        `"<suppressed>"` (err `SEND_SUPPRESSED`); a queue, serialization or database failure gives
        an `"<error>"` handle (err `UNHANDLED_EXCEPTION`) and writes nothing. Use `send_async`
        inside async code.
        """
        return self._send_one("send", args, kwargs)

    def schedule(self, delay_seconds: float, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue the task so that it becomes claimable after `delay_seconds` seconds (D7).

        Same rules as `send`; failures are reported as `Failed to schedule task …` on an
        `"<error>"` handle.
        """
        return self._send_one("schedule", args, kwargs, delay_seconds)

    def _send_one(
        self,
        action: _Action,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        delay_seconds: object = None,
    ) -> TaskHandle[T]:
        # `_prepare` for one call, inlined: this is the hot path of every send.
        app = self.app
        if app.are_sends_suppressed():
            return self._suppressed_handle(action)
        try:
            queue_name, priority = app.resolve_queue(self.task_queue_name)
        except Exception as exc:
            return _error_handle(self, f"Task execution error for {self.__name__}", exc)
        try:
            if kwargs and (CTX_KEY in kwargs or META_KEY in kwargs):
                _refuse_reserved(kwargs)
            sent_at = None
            if action == "schedule":
                sent_at = datetime.now(UTC) + timedelta(seconds=_check_delay(delay_seconds))
            broker = app.get_broker()
            task_id = broker.enqueue(
                self.task_name,
                args,
                kwargs or None,
                queue_name,
                priority=priority,
                sent_at=sent_at,
                good_until=self.task_good_until,
                task_options=self.task_options_json,
                max_retries=self.task_max_retries,
            )
        except Exception as exc:
            return self._failed(action, exc)[0]
        return TaskHandle(task_id, broker=broker)

    async def send_async(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Async twin of `send`: same rules; the insert runs on the broker's async pool.

        Concurrent `send_async` calls in one event loop share round trips: the calls that arrive
        while an insert is in flight are inserted together by the next one. Each call still
        returns once its own task is stored, and fails only for its own reasons.
        """
        app = self.app
        if app.are_sends_suppressed():
            return self._suppressed_handle("send")
        try:
            queue_name, priority = app.resolve_queue(self.task_queue_name)
        except Exception as exc:
            return _error_handle(self, f"Task execution error for {self.__name__}", exc)
        try:
            if kwargs and (CTX_KEY in kwargs or META_KEY in kwargs):
                _refuse_reserved(kwargs)
            broker = app.get_broker()
            task_id = await broker.enqueue_async(
                self.task_name,
                args,
                kwargs or None,
                queue_name,
                priority=priority,
                good_until=self.task_good_until,
                task_options=self.task_options_json,
                max_retries=self.task_max_retries,
            )
        except Exception as exc:
            return self._failed("send", exc)[0]
        return TaskHandle(task_id, broker=broker)

    def _prepare_many(self, calls: Iterable[SendManyCall]) -> _ManyPrepared | list[TaskHandle[T]]:
        """Steps 1-3 of 02 §4 for `send_many`: every item checked and split into (args, kwargs)
        first; then the broker, queue and calls, or the handles to return instead (suppressed
        sends, a queue error, a refused item)."""
        items = list(calls)
        try:
            # A dict is by far the most common item: skip the call for it.
            pairs: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
                ((), typing.cast("dict[str, Any]", call))
                if type(call) is dict  # pyright: ignore[reportUnknownArgumentType]
                else _split_call(call)
                for call in items
            ]
        except TypeError as exc:
            return self._failed("send", exc, len(items))
        app = self.app
        if app.are_sends_suppressed():
            return [self._suppressed_handle("send") for _ in pairs]
        try:
            queue_name, priority = app.resolve_queue(self.task_queue_name)
        except Exception as exc:
            handle = _error_handle(self, f"Task execution error for {self.__name__}", exc)
            return [handle for _ in pairs]
        if not pairs:
            return []
        try:
            for _, call_kwargs in pairs:
                if call_kwargs and (CTX_KEY in call_kwargs or META_KEY in call_kwargs):
                    _refuse_reserved(call_kwargs)
            broker = app.get_broker()
        except Exception as exc:
            return self._failed("send", exc, len(pairs))
        return broker, queue_name, priority, pairs

    def send_many(self, calls: Iterable[SendManyCall]) -> list[TaskHandle[T]]:
        """Enqueue many calls in one database statement; one handle per call, in order.

        Each item of `calls` is one call: a mapping of keyword arguments or a tuple of positional
        arguments, e.g. `[(1, 2), {"a": 3, "b": 4}, ()]`. The batch is all or nothing: every call
        is checked before anything is written, and if one item is neither form, any argument
        cannot be serialized or the insert fails, nothing is written and every handle is an
        `"<error>"` handle. Prefer it over a loop of `send()` for large fan-outs.
        """
        prepared = self._prepare_many(calls)
        if isinstance(prepared, list):
            return prepared
        broker, queue_name, priority, pairs = prepared
        try:
            task_ids = broker.enqueue_calls(
                self.task_name,
                pairs,
                queue_name,
                priority=priority,
                good_until=self.task_good_until,
                task_options=self.task_options_json,
                max_retries=self.task_max_retries,
            )
        except Exception as exc:
            return self._failed("send", exc, len(pairs))
        return [TaskHandle(task_id, broker) for task_id in task_ids]

    async def send_many_async(self, calls: Iterable[SendManyCall]) -> list[TaskHandle[T]]:
        """Async twin of `send_many` (same forms, same all-or-nothing rule)."""
        prepared = self._prepare_many(calls)
        if isinstance(prepared, list):
            return prepared
        broker, queue_name, priority, pairs = prepared
        try:
            task_ids = await broker.enqueue_calls_async(
                self.task_name,
                pairs,
                queue_name,
                priority=priority,
                good_until=self.task_good_until,
                task_options=self.task_options_json,
                max_retries=self.task_max_retries,
            )
        except Exception as exc:
            return self._failed("send", exc, len(pairs))
        return [TaskHandle(task_id, broker) for task_id in task_ids]


def _split_call(call: object) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if type(call) is dict:
        return (), typing.cast("dict[str, Any]", call)
    if type(call) is tuple:
        return typing.cast("tuple[Any, ...]", call), {}
    if isinstance(call, Mapping):
        return (), dict(typing.cast("Mapping[str, Any]", call))
    if isinstance(call, tuple):
        return typing.cast("tuple[Any, ...]", call), {}
    raise TypeError(
        "send_many takes one mapping of keyword arguments or one tuple of positional arguments "
        f"per call, got {type(call).__name__}"
    )


def _refuse_reserved(kwargs: Mapping[str, Any]) -> None:
    """Raise for keyword arguments named like the workflow engine's transport keys: the worker
    would take them for workflow context and drop (or misread) them."""
    name = CTX_KEY if CTX_KEY in kwargs else META_KEY
    raise ValueError(
        f"keyword argument name {name!r} is reserved by horsies (workflow context transport)"
    )


def _check_delay(delay_seconds: object) -> float:
    if (
        isinstance(delay_seconds, bool)
        or not isinstance(delay_seconds, int | float)
        or not delay_seconds >= 0
        or delay_seconds == float("inf")
    ):
        raise ValueError(f"delay_seconds must be a finite number >= 0, got {delay_seconds!r}")
    return float(delay_seconds)


def run_task_function(
    task_fn: TaskFunction[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> TaskResult[Any, TaskError]:
    """Run a task function and turn every outcome into a `TaskResult` (spec 02 §3, §6, decision D9).

    Used by direct calls and by worker children. A returned `TaskResult` is checked against the
    declared types (`RETURN_TYPE_MISMATCH` on failure); a raised exception becomes
    `UNHANDLED_EXCEPTION` (with the exception object and `data={"exception_type": ...}`), except
    `WorkflowContextMissingIdError`, which becomes `WORKFLOW_CTX_MISSING_ID` (spec 03 §10.2); a
    return value that is not a `TaskResult` becomes `TASK_EXCEPTION`. Only `KeyboardInterrupt`
    propagates.
    """
    fn = task_fn._original_fn  # pyright: ignore[reportPrivateUsage]
    try:
        # Typed as object: the function may break its annotation and return anything.
        returned = typing.cast(object, fn(*args, **kwargs))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        exc_type = type(exc).__name__
        if isinstance(exc, WorkflowContextMissingIdError):
            # A lookup by a node without an id is a workflow wiring mistake, not a task bug.
            error = failure(
                LibraryErrorCode.WORKFLOW_CTX_MISSING_ID,
                f"Task {task_fn.__name__}: {exception_text(exc)}",
                {"exception_type": exc_type},
                exception=exc,
            )
            return error
        error = failure(
            LibraryErrorCode.UNHANDLED_EXCEPTION,
            (f"Unhandled exception in task {task_fn.__name__}: {exc_type}: {exception_text(exc)}"),
            {"exception_type": exc_type},
            exception=exc,
        )
        return error
    if isinstance(returned, TaskResult):
        return task_fn.validate_result(typing.cast("TaskResult[Any, Any]", returned))
    if inspect.iscoroutine(returned):
        # Never awaited: close it so Python does not warn about it.
        returned.close()
    returned_type = type(returned).__name__
    error = failure(
        LibraryErrorCode.TASK_EXCEPTION,
        f"Task {task_fn.__name__} returned {returned_type} instead of TaskResult",
        {"task_name": task_fn.task_name, "returned_type": returned_type},
    )
    return error


# -- definition time ------------------------------------------------------------------------------

KNOWN_TASK_OPTIONS = ("queue_name", "good_until", "auto_retry_for", "retry_policy")
"""Keyword options accepted by `@app.task`; anything else is refused (decision D5)."""

MAX_TASK_NAME_LENGTH = 255
"""Longest task name the `task_name` column holds."""

_RETURN_HELP = (
    "annotate the function's result, for example:\n"
    "def my_task(x: int) -> TaskResult[int, TaskError]: ..."
)


def _options_error(message: str, location: SourceLocation | None) -> TaskDefinitionError:
    error = TaskDefinitionError(message, code=ErrorCode.TASK_INVALID_OPTIONS)
    return error.with_location(location) if location is not None else error


def _checked_name(
    fn: Callable[..., Any], task_name: str | None, location: SourceLocation | None
) -> str:
    name = default_task_name(fn) if task_name is None else task_name
    if not isinstance(name, str) or not name.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
        raise _options_error("invalid task name", location).with_note(
            f"task names must be non-empty strings, got {name!r}"
        )
    if len(name) > MAX_TASK_NAME_LENGTH:
        raise _options_error("invalid task name", location).with_note(
            f"task names are at most {MAX_TASK_NAME_LENGTH} characters, got {len(name)}"
        )
    if "\x00" in name:
        # PostgreSQL text cannot hold NUL: every send would fail.
        raise _options_error("invalid task name", location).with_note(
            f"task names cannot contain NUL characters, got {name!r}"
        )
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise _options_error("invalid task name", location).with_note(
                f"task names must be valid UTF-8 text (no lone surrogates), got {name!r}"
            ) from None
    return name


def _validated_options(
    options: Mapping[str, Any], location: SourceLocation | None
) -> tuple[str | None, TaskOptions]:
    from horsies.retry import TaskOptions

    unknown = [name for name in options if name not in KNOWN_TASK_OPTIONS]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        noun = "option" if len(unknown) == 1 else "options"
        raise _options_error(f"unknown task {noun} {listed}", location).with_help(
            f"supported options: {', '.join(KNOWN_TASK_OPTIONS)}"
        )
    queue_name = options.get("queue_name")
    if queue_name is not None and not isinstance(queue_name, str):
        raise _options_error("invalid task options", location).with_note(
            f"queue_name: expected a string, got {type(queue_name).__name__}"
        )
    auto_retry_for = options.get("auto_retry_for")
    if isinstance(auto_retry_for, tuple | set | frozenset):
        auto_retry_for = list(typing.cast("Iterable[Any]", auto_retry_for))
    try:
        task_options = TaskOptions(
            auto_retry_for=auto_retry_for,
            retry_policy=options.get("retry_policy"),
            good_until=options.get("good_until"),
        )
    except ValidationError as exc:
        error = _options_error("invalid task options", location)
        for detail in exc.errors(include_url=False):
            field = ".".join(str(part) for part in detail["loc"]) or "options"
            error = error.with_note(f"{field}: {detail['msg']}")
        raise error from exc
    return queue_name, task_options


def _resolve_return_type(fn: Callable[..., Any]) -> Any:
    annotations: Mapping[str, Any] = getattr(fn, "__annotations__", None) or {}
    if "return" not in annotations:
        raise TaskDefinitionError(
            "task function must declare an explicit return type",
            code=ErrorCode.TASK_NO_RETURN_TYPE,
        ).with_help(_RETURN_HELP)
    try:
        return typing.get_type_hints(fn)["return"]
    except Exception:
        # Another annotation may be unresolvable (e.g. a TYPE_CHECKING import); only the result
        # matters.
        pass
    raw = annotations["return"]
    if not isinstance(raw, str):
        return raw
    try:
        return eval(raw, dict(getattr(fn, "__globals__", {})))
    except Exception as exc:
        raise (
            TaskDefinitionError(
                "task function must return TaskResult", code=ErrorCode.TASK_INVALID_RETURN_TYPE
            )
            .with_note(f"cannot resolve the return annotation {raw!r}: {exc}")
            .with_help("define the types used in the annotation at module level")
        ) from exc


def _declared_result_types(fn: Callable[..., Any]) -> tuple[Any, Any]:
    declared = _resolve_return_type(fn)
    if typing.get_origin(declared) is not TaskResult:
        raise (
            TaskDefinitionError(
                "task function must return TaskResult", code=ErrorCode.TASK_INVALID_RETURN_TYPE
            )
            .with_note(f"declared return type: {_type_name(declared)}")
            .with_help(_RETURN_HELP)
        )
    type_args = typing.get_args(declared)
    if len(type_args) != 2:
        raise (
            TaskDefinitionError(
                "task function must return TaskResult", code=ErrorCode.TASK_INVALID_RETURN_TYPE
            )
            .with_note(
                f"TaskResult takes 2 type arguments (ok type, error type), got {len(type_args)}"
            )
            .with_help(_RETURN_HELP)
        )
    return type_args[0], type_args[1]


def define_task(
    app: Horsies,
    fn: Callable[P, TaskResult[T, Any]],
    *,
    task_name: str | None,
    options: Mapping[str, Any],
) -> TaskFunction[P, T]:
    """Run the definition-time checks of spec 02 §1 and build the (unregistered) `TaskFunction`.

    Order (first failure raises, with the function's source location): unknown options (E102, D5);
    option validation (E102); task name (E102, D4); queue rules (E200 / E103); missing return
    annotation (E100); not `TaskResult[T, E]` (E101); `async def` (E101: a coroutine is never a
    `TaskResult`). Duplicate names (E301) are checked by the registry.
    """
    location = SourceLocation.from_function(fn)
    if not callable(fn):  # pyright: ignore[reportUnnecessaryComparison]
        raise _options_error(f"a task must be a function, got {type(fn).__name__}", location)
    queue_name, task_options = _validated_options(options, location)
    try:
        name = _checked_name(fn, task_name, location)
        app.validate_queue_name(queue_name)
        ok_type, err_type = _declared_result_types(fn)
    except HorsiesError as error:
        raise (error.with_location(location) if location is not None else error) from None
    if inspect.iscoroutinefunction(fn):
        raise (
            TaskDefinitionError(
                "task function must return TaskResult",
                code=ErrorCode.TASK_INVALID_RETURN_TYPE,
                location=location,
            )
            .with_note("async def functions return a coroutine, not a TaskResult")
            .with_help("define the task with def; call async code inside it with asyncio.run(...)")
        )
    return TaskFunction(
        app,
        fn,
        task_name=name,
        queue_name=queue_name,
        options=task_options,
        ok_type=ok_type,
        err_type=err_type,
    )


def task_origin(fn: Callable[..., Any]) -> str:
    """`realpath(file):first_line` of a function: identifies it when checking duplicate names."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return f"<object {id(fn)}>"
    return f"{os.path.realpath(code.co_filename)}:{code.co_firstlineno}"
