"""`TaskFunction`, what `@app.task` returns: call it to run the task here, send it to a worker.

The sending methods (`send`, `send_async`, `schedule`, `send_many`, `send_many_async`) write rows
through the app's broker and never raise for runtime problems: a failure comes back as an
`"<error>"` or `"<suppressed>"` handle, so producer code has one path whether or not the database
answers. Everything a send needs that does not depend on the call (options JSON, retry count,
expiry, queue, the function's parameters) is computed once when the task is defined, so the
per-send Python work is a suppression check, a cheap queue re-validation, checking the arguments
against the parameters (`tasks/arguments.py`) and the broker call. A result the function returns
is checked here against its declared `TaskResult[T, E]`.
"""

from __future__ import annotations

import copy
import enum
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    NamedTuple,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    overload,
)

from pydantic import ValidationError

from horsies.broker.limits import LimitTag
from horsies.broker.unique import UniqueClaim, UniqueOutcome
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.failures import failure
from horsies.logs import get_logger
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tasks.arguments import ArgumentCheck
from horsies.tasks.execution import run_task_coroutine, run_task_function, safe_text
from horsies.tasks.handle import SUPPRESSED_TASK_ID, TaskHandle
from horsies.tasks.limits import Limit, LimitKeys, checked_limit_key
from horsies.tasks.result_types import NO_ADAPTER, build_adapter, type_name
from horsies.tasks.send_refusals import (
    ArgumentsRefused,
    check_delay,
    error_handle,
    refuse_reserved,
    split_call,
)
from horsies.tasks.send_spans import traced_send, traced_send_async
from horsies.tasks.unique import TaskAlreadyExists, Unique, UniqueKeys

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker.caller_connection import CallerConnection
    from horsies.broker.postgres import PostgresBroker
    from horsies.retry import TaskOptions

__all__ = ["AsyncTaskFunction", "SendManyCall", "TaskDecorator", "TaskFunction"]

P = ParamSpec("P")
T = TypeVar("T")

_logger = get_logger("tasks")
_Action = Literal["send", "schedule"]


class _Keep(enum.Enum):
    """`with_options`: an option not given keeps the task's value."""

    KEEP = enum.auto()


SendManyCall = Mapping[str, Any] | tuple[Any, ...]
"""One call of `send_many`: a mapping of keyword arguments or a tuple of positional arguments."""
_Sent = Sequence[str | UniqueOutcome]
"""What an insert gives per call: the new task's id, or for a unique send whose task it is."""


class _Checked(NamedTuple):
    """What a send inserts with, once its checks passed."""

    broker: PostgresBroker
    queue_name: str
    priority: int


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
        unique: Unique | None = None,
        limit: Limit | None = None,
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
        # The broker's insert arguments that are the same for every send of this task.
        self._insert_options: dict[str, Any] = {
            "good_until": self.task_good_until,
            "task_options": self.task_options_json,
            "max_retries": self.task_max_retries,
        }
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
        self.arguments = ArgumentCheck(fn)
        """The function's parameters, for checking a call's arguments before it is stored."""
        self._unique = None if unique is None else UniqueKeys(task_name, fn, unique)
        self._limit = None if limit is None else LimitKeys(fn, limit)

    is_async: bool = False
    """True for an ``async def`` task (an `AsyncTaskFunction`)."""
    _within: CallerConnection | None = None
    """The caller's connection the sends go through (see `within`), or None for the pool."""
    _limit_key: str | None = None
    """The limit key chosen for the sends made through this view (see `with_options`)."""

    @property
    def task_limit(self) -> Limit | None:
        """The rate or concurrency limit of the task's runs, or None."""
        return None if self._limit is None else self._limit.limit

    def __repr__(self) -> str:
        queue = self.task_queue_name or "default"
        return f"<{type(self).__name__} {self.task_name!r} queue={queue!r}>"

    # -- direct execution -------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[T, TaskError]:
        """Run the task now, in this process (no database, no retries, no suppression check).

        Exceptions (except `KeyboardInterrupt`) become an `UNHANDLED_EXCEPTION` error result; a
        returned value that does not match the declared `TaskResult[T, E]` becomes
        `RETURN_TYPE_MISMATCH`.
        """
        return run_task_function(self, args, kwargs)

    def with_options(
        self,
        *,
        time_limit_s: float | _Keep | None = _Keep.KEEP,
        unique: Unique | _Keep | None = _Keep.KEEP,
        limit_key: str | _Keep = _Keep.KEEP,
    ) -> Self:
        """This task with other options for the sends made through it (the ones not given are
        kept); the task itself is unchanged. ``build_report.with_options(time_limit_s=900)
        .send(day)`` gives that one run 15 minutes; ``with_options(unique=Unique(key=...))``
        deduplicates by a key of your own (None: no deduplication); ``with_options(limit_key=
        "acme")`` counts the sends under that key of the task's `Limit`.

        Raises:
            TaskDefinitionError: E102 for an invalid value (``time_limit_s`` must be a positive
                number of seconds, or None for no limit; ``unique.on`` must name parameters;
                ``limit_key`` a non-empty string, for a task that has a limit).
        """
        view = copy.copy(self)
        if not isinstance(time_limit_s, _Keep):
            fields = {**self.task_options.model_dump(), "time_limit_s": time_limit_s}
            options = type(self.task_options).checked(**fields)
            view.task_options = options
            view.task_options_json = options.to_json()
            view._insert_options = {**self._insert_options, "task_options": view.task_options_json}
        if not isinstance(unique, _Keep):
            view._unique = (
                None if unique is None else UniqueKeys(self.task_name, self.__wrapped__, unique)
            )
        if not isinstance(limit_key, _Keep):
            view._limit_key = checked_limit_key(self.task_name, self._limit, limit_key)
        return view

    def _carrying(self, options_json: str) -> Self:
        """This task with its sends storing ``options_json``: its options and a trace carrier
        (`tasks/send_spans.py`)."""
        view = copy.copy(self)
        view._insert_options = {**self._insert_options, "task_options": options_json}
        return view

    def within(self, connection: object) -> Self:
        """This task with its sends written through ``connection``, inside its open transaction:
        the tasks exist only if that transaction commits, and workers are woken at the commit.

        ``connection`` is a psycopg 3 `Connection` (for `send`, `send_many`, `schedule`) or
        `AsyncConnection` (for `send_async`, `send_many_async`), a SQLAlchemy 2 `Connection` or
        `Session` (or their asyncio forms) on the psycopg driver, or Django's connection.
        ``order_shipped.within(session).send(order.id)`` sends in the session's transaction.
        Every check of a normal send applies first and refuses without writing anything (the
        transaction stays usable); a failed insert fails the transaction, as any failed
        statement does. The schema must be installed beforehand (E212 otherwise). See
        docs/transactions.md.

        Raises:
            ConfigurationError: E211 for an object horsies cannot write through.
        """
        # Here, not at the top: a worker child imports its tasks and never loads the database
        # driver unless a task sends.
        from horsies.broker.caller_connection import CallerConnection

        view = copy.copy(self)
        view._within = CallerConnection(connection)
        return view

    def result_adapters(self) -> tuple[Any, Any]:
        """The validators of the declared `T` and `E`, built on first use (a worker's fork server
        builds them before it forks its children, so that they share them)."""
        ok_adapter = self._ok_adapter
        if ok_adapter is None:
            ok_adapter = self._ok_adapter = build_adapter(self._ok_type)
        err_adapter = self._err_adapter
        if err_adapter is None:
            err_adapter = self._err_adapter = build_adapter(self._err_type)
        return ok_adapter, err_adapter

    def validate_result(self, result: TaskResult[Any, Any]) -> TaskResult[Any, Any]:
        """Check a returned `TaskResult` against the declared `T` / `E` (lax mode).

        Returns `result` itself when it validates (coerced values are discarded), else an err
        `RETURN_TYPE_MISMATCH` result.
        """
        ok_adapter, err_adapter = self.result_adapters()
        if result.is_ok():
            variant, value, adapter, expected = "ok", result.ok, ok_adapter, self._ok_type
        else:
            variant, value, adapter, expected = "err", result.err, err_adapter, self._err_type
        if adapter is NO_ADAPTER:
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
                self._ok_adapter = NO_ADAPTER
            else:
                self._err_adapter = NO_ADAPTER
        return result

    def _mismatch(
        self, variant: str, value: object, expected: Any, exc: ValidationError
    ) -> TaskResult[Any, Any]:
        expected_name = type_name(expected)
        actual = safe_text(value)
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
        handle = error_handle(self.task_name, f"Failed to {verb} task {self.__name__}", exc)
        return [handle for _ in range(count)]

    @traced_send("send")
    def send(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue the task for a worker and return its handle at once.

        Never raises for runtime problems: while sends are suppressed the handle's id is
        `"<suppressed>"` (err `SEND_SUPPRESSED`). A call that can only fail later is refused
        before anything is written, with an `"<error>"` handle (err `SEND_REFUSED`, also logged
        as a warning): arguments that do not fit the function's parameters or cannot be
        serialized, an unknown queue, a reserved keyword. A database that fails the call gives an
        `"<error>"` handle with err `BROKER_ERROR`, and nothing is written. Use `send_async`
        inside async code.
        """
        return self._send_one("send", args, kwargs)

    @traced_send("schedule")
    def schedule(self, delay_seconds: float, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Enqueue the task so that it becomes claimable after `delay_seconds` seconds.

        Same rules as `send`; failures are reported as `Failed to schedule task …` on an
        `"<error>"` handle.
        """
        return self._send_one("schedule", args, kwargs, delay_seconds)

    def _checked(
        self, action: _Action, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> _Checked | list[TaskHandle[T]]:
        """The checks of a send that need no database, for one call or a batch: the broker, queue
        and priority to insert with, or the handles to return instead (suppressed sends, a queue
        error, a reserved keyword)."""
        app = self.app
        if app.are_sends_suppressed():
            return [self._suppressed_handle(action) for _ in calls]
        try:
            queue_name, priority = app.resolve_queue(self.task_queue_name)
        except Exception as exc:
            handle = error_handle(self.task_name, f"Task execution error for {self.__name__}", exc)
            return [handle for _ in calls]
        try:
            problem = self.arguments.problem
            for call_args, call_kwargs in calls:
                if call_kwargs and (CTX_KEY in call_kwargs or META_KEY in call_kwargs):
                    refuse_reserved(call_kwargs)
                reason = problem(call_args, call_kwargs)
                if reason is not None:
                    which = " (one call of the batch)" if len(calls) > 1 else ""
                    raise ArgumentsRefused(
                        f"arguments do not fit {self.__name__}{self.arguments.signature}{which}: "
                        f"{reason}"
                    )
            return _Checked(app.get_broker(), queue_name, priority)
        except Exception as exc:
            return self._failed(action, exc, len(calls))

    def _handles(
        self, action: _Action, count: int, broker: PostgresBroker, insert: Callable[[], _Sent]
    ) -> list[TaskHandle[T]]:
        """The handles of ``count`` calls whose rows ``insert`` writes (its failure in each)."""
        try:
            sent = insert()
        except Exception as exc:
            return self._failed(action, exc, count)
        return self._made(broker, sent)

    async def _handles_async(
        self, count: int, broker: PostgresBroker, insert: Awaitable[_Sent]
    ) -> list[TaskHandle[T]]:
        """Async twin of `_handles` (async sends are never scheduled)."""
        try:
            sent = await insert
        except Exception as exc:
            return self._failed("send", exc, count)
        return self._made(broker, sent)

    def _made(self, broker: PostgresBroker, sent: _Sent) -> list[TaskHandle[T]]:
        within = self._within is not None
        return [
            TaskHandle(item, broker, within=within)
            if isinstance(item, str)
            else TaskHandle(item.task_id, broker, within=within, created=item.created)
            for item in sent
        ]

    def _unique_claim(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> UniqueClaim | None:
        return None if self._unique is None else self._unique.claim(args, kwargs)

    def limit_tag(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> LimitTag | None:
        """The limit and key a call of this task is counted under, or None without a limit
        (schedules and workflow nodes store it as a send does).

        Raises:
            ValueError: the limit's key function failed or gave no usable key.
        """
        limit = self._limit
        return None if limit is None else limit.tag(args, kwargs, self._limit_key)

    def _limit_tags(
        self, pairs: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[LimitTag] | None:
        """The ``limits`` of a batch's insert: one tag per call, or None without a limit."""
        limit = self._limit
        return None if limit is None else [limit.tag(a, k, self._limit_key) for a, k in pairs]

    def _raise_if_exists(self, handle: TaskHandle[T], claim: UniqueClaim | None) -> TaskHandle[T]:
        unique = self._unique
        raising = unique is not None and unique.unique.if_exists == "raise"
        if claim is not None and raising and not handle.created:
            raise TaskAlreadyExists(self.task_name, claim.key, handle.task_id)
        return handle

    def _send_one(
        self,
        action: _Action,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        delay_seconds: object = None,
    ) -> TaskHandle[T]:
        checked = self._checked(action, [(args, kwargs)])
        if not isinstance(checked, _Checked):
            return checked[0]
        broker, queue_name, priority = checked
        claim: UniqueClaim | None = None

        def insert() -> _Sent:
            nonlocal claim
            # The delay runs on the database's clock, like every other time of the task.
            delay_s = check_delay(delay_seconds) if action == "schedule" else None
            claim = self._unique_claim(args, kwargs)
            limit = self.limit_tag(args, kwargs)
            if claim is not None:
                return [broker.enqueue_unique(
                    self.task_name, args, kwargs or None, queue_name, unique=claim,
                    priority=priority, delay_s=delay_s, within=self._within, limit=limit,
                    **self._insert_options,
                )]  # fmt: skip
            task_id = broker.enqueue(
                self.task_name, args, kwargs or None, queue_name, priority=priority,
                delay_s=delay_s, within=self._within, limit=limit, **self._insert_options,
            )  # fmt: skip
            return [task_id]

        return self._raise_if_exists(self._handles(action, 1, broker, insert)[0], claim)

    @traced_send_async("send")
    async def send_async(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]:
        """Async twin of `send`: same rules; the insert runs on the broker's async pool.

        Concurrent `send_async` calls in one event loop share round trips: the calls that arrive
        while an insert is in flight are inserted together by the next one. Each call still
        returns once its own task is stored, and fails only for its own reasons.
        """
        checked = self._checked("send", [(args, kwargs)])
        if not isinstance(checked, _Checked):
            return checked[0]
        broker, queue_name, priority = checked
        claim: UniqueClaim | None = None

        async def insert() -> _Sent:
            nonlocal claim
            claim = self._unique_claim(args, kwargs)
            limit = self.limit_tag(args, kwargs)
            if claim is not None:
                return [await broker.enqueue_unique_async(
                    self.task_name, args, kwargs or None, queue_name, unique=claim,
                    priority=priority, within=self._within, limit=limit, **self._insert_options,
                )]  # fmt: skip
            task_id = await broker.enqueue_async(
                self.task_name, args, kwargs or None, queue_name, priority=priority,
                within=self._within, limit=limit, **self._insert_options,
            )  # fmt: skip
            return [task_id]

        handle = (await self._handles_async(1, broker, insert()))[0]
        return self._raise_if_exists(handle, claim)

    def _many(
        self, calls: Iterable[SendManyCall]
    ) -> tuple[_Checked, list[tuple[tuple[Any, ...], dict[str, Any]]]] | list[TaskHandle[T]]:
        """`_checked` for `send_many`: every item is split into (args, kwargs) first."""
        items = list(calls)
        try:
            # A dict is by far the most common item: skip the call for it.
            pairs: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
                ((), typing.cast("dict[str, Any]", call))
                if type(call) is dict  # pyright: ignore[reportUnknownArgumentType]
                else split_call(call)
                for call in items
            ]
        except TypeError as exc:
            return self._failed("send", exc, len(items))
        if not pairs:
            return []
        checked = self._checked("send", pairs)
        if not isinstance(checked, _Checked):
            return checked
        return checked, pairs

    @traced_send("send")
    def send_many(self, calls: Iterable[SendManyCall]) -> list[TaskHandle[T]]:
        """Enqueue many calls in one database statement; one handle per call, in order.

        Each item of `calls` is one call: a mapping of keyword arguments or a tuple of positional
        arguments, e.g. `[(1, 2), {"a": 3, "b": 4}, ()]`. The batch is all or nothing: every call
        is checked before anything is written, and if one item is neither form, any argument
        cannot be serialized or the insert fails, nothing is written and every handle is an
        `"<error>"` handle. Prefer it over a loop of `send()` for large fan-outs.
        """
        many = self._many(calls)
        if isinstance(many, list):
            return many
        (broker, queue_name, priority), pairs = many
        unique = self._unique

        def insert() -> _Sent:
            limits = self._limit_tags(pairs)
            if unique is None:
                return broker.enqueue_calls(
                    self.task_name, pairs, queue_name, priority=priority, within=self._within,
                    limits=limits, **self._insert_options,
                )  # fmt: skip
            return broker.enqueue_calls_unique(
                self.task_name, pairs, [unique.claim(a, k) for a, k in pairs], queue_name,
                priority=priority, within=self._within, limits=limits, **self._insert_options,
            )  # fmt: skip

        return self._handles("send", len(pairs), broker, insert)

    @traced_send_async("send")
    async def send_many_async(self, calls: Iterable[SendManyCall]) -> list[TaskHandle[T]]:
        """Async twin of `send_many` (same forms, same all-or-nothing rule)."""
        many = self._many(calls)
        if isinstance(many, list):
            return many
        (broker, queue_name, priority), pairs = many
        unique = self._unique

        async def insert() -> _Sent:
            limits = self._limit_tags(pairs)
            if unique is None:
                return await broker.enqueue_calls_async(
                    self.task_name, pairs, queue_name, priority=priority, within=self._within,
                    limits=limits, **self._insert_options,
                )  # fmt: skip
            return await broker.enqueue_calls_unique_async(
                self.task_name, pairs, [unique.claim(a, k) for a, k in pairs], queue_name,
                priority=priority, within=self._within, limits=limits, **self._insert_options,
            )  # fmt: skip

        return await self._handles_async(len(pairs), broker, insert())


class AsyncTaskFunction(TaskFunction[P, T]):
    """A registered ``async def`` task. Sent, scheduled and used in workflows exactly like a
    `TaskFunction`; a worker awaits it on its child's event loop. Calling it in-process returns a
    coroutine of the `TaskResult`: ``result = await fetch_page(url)``."""

    is_async = True

    def __call__(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, TaskResult[T, TaskError]]:
        """Run the task now, on the caller's event loop, with the outcomes of a direct call of a
        `TaskFunction`."""
        return run_task_coroutine(self, args, kwargs)


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` with options returns: applied to a function, its task."""

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, TaskResult[T, Any]]], /
    ) -> AsyncTaskFunction[P, T]: ...

    @overload
    def __call__(self, fn: Callable[P, TaskResult[T, Any]], /) -> TaskFunction[P, T]: ...
