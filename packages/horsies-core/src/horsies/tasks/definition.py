"""Checking a task when `@app.task` defines it, and building its `TaskFunction`.

Every mistake a definition can show (an unknown option, a bad name or queue, a missing or wrong
return annotation) is raised here, pointing at the user's function, so it surfaces
when the module is imported rather than on the first send. The default task name and the origin
used to tell duplicate names apart are decided here too.
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from horsies.errors import ErrorCode, HorsiesError, SourceLocation, TaskDefinitionError
from horsies.module_files import DYNAMIC_MODULE_PREFIX, module_name_for_path
from horsies.names import MAX_TASK_NAME_LENGTH, task_name_problem
from horsies.results import TaskResult
from horsies.retry import TaskOptions
from horsies.tasks.function import AsyncTaskFunction, TaskFunction
from horsies.tasks.limits import Limit
from horsies.tasks.result_types import type_name
from horsies.tasks.unique import Unique

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = [
    "KNOWN_TASK_OPTIONS",
    "MAX_TASK_NAME_LENGTH",
    "default_task_name",
    "define_task",
    "task_origin",
]

P = ParamSpec("P")
T = TypeVar("T")
_MAIN_MODULES = frozenset({"__main__", "__mp_main__"})

KNOWN_TASK_OPTIONS = (
    "queue_name", "good_until", "auto_retry_for", "retry_policy", "time_limit_s", "unique", "limit",
)  # fmt: skip
"""Keyword options accepted by `@app.task`; anything else is refused, so that a misspelt option
fails at definition instead of being silently ignored."""

"""Longest task name the `task_name` column holds."""

_RETURN_HELP = (
    "annotate the function's result, for example:\n"
    "def my_task(x: int) -> TaskResult[int, TaskError]: ..."
)


def default_task_name(fn: Callable[..., Any]) -> str:
    """Name of a task defined without one: `"<module>.<qualname>"`, the same in every process.

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


def _options_error(message: str, location: SourceLocation | None) -> TaskDefinitionError:
    error = TaskDefinitionError(message, code=ErrorCode.TASK_INVALID_OPTIONS)
    return error.with_location(location) if location is not None else error


def _checked_name(
    fn: Callable[..., Any], task_name: str | None, location: SourceLocation | None
) -> str:
    name = default_task_name(fn) if task_name is None else task_name
    problem = task_name_problem(name)
    if problem is not None:
        raise _options_error("invalid task name", location).with_note(problem)
    return name


def _validated_options(
    options: Mapping[str, Any], location: SourceLocation | None
) -> tuple[str | None, TaskOptions]:
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
        task_options = TaskOptions.checked(
            auto_retry_for=auto_retry_for,
            retry_policy=options.get("retry_policy"),
            good_until=options.get("good_until"),
            time_limit_s=options.get("time_limit_s"),
        )
    except TaskDefinitionError as error:
        located = error.with_location(location) if location is not None else error
        raise located from error.__cause__
    until = task_options.good_until
    if until is not None and until.utcoffset() is None:
        # PostgreSQL would read a naive deadline in each session's time zone.
        raise (
            _options_error("invalid task options", location)
            .with_note(f"good_until: must be timezone-aware, got {until!r}")
            .with_help("for example good_until=datetime(2031, 1, 1, tzinfo=UTC)")
        )
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
            .with_note(f"declared return type: {type_name(declared)}")
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
    """Check a task's definition and build its (unregistered) `TaskFunction`.

    Order (first failure raises, with the function's source location): unknown options (E102);
    option validation (E102); task name (E102); queue rules (E200 / E103); missing return
    annotation (E100); not `TaskResult[T, E]` (E101). An ``async def`` function becomes an
    `AsyncTaskFunction`. Duplicate names (E301) are checked by the registry.
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
    kind = cast(
        "type[TaskFunction[P, T]]",
        AsyncTaskFunction if inspect.iscoroutinefunction(fn) else TaskFunction,
    )
    unique = options.get("unique")
    if unique is not None and not isinstance(unique, Unique):
        raise _options_error("invalid task options", location).with_note(
            f"unique: a horsies.Unique, got {type(unique).__name__}"
        )
    limit = options.get("limit")
    if limit is not None and not isinstance(limit, Limit):
        raise _options_error("invalid task options", location).with_note(
            f"limit: a horsies.Limit, got {type(limit).__name__}"
        )
    try:
        # An async function's declared TaskResult is what its coroutine gives: the same contract.
        return kind(
            app,
            typing.cast("Callable[P, TaskResult[T, Any]]", fn),
            task_name=name,
            queue_name=queue_name,
            options=task_options,
            ok_type=ok_type,
            err_type=err_type,
            unique=unique,
            limit=limit,
        )
    except HorsiesError as error:
        raise (error.with_location(location) if location is not None else error) from None


def task_origin(fn: Callable[..., Any]) -> str:
    """`realpath(file):first_line` of a function: identifies it when checking duplicate names."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return f"<object {id(fn)}>"
    return f"{os.path.realpath(code.co_filename)}:{code.co_firstlineno}"
