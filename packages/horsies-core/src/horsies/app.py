"""`Horsies`: the application object.

It holds the configuration, the task registry, the list of task modules to discover, the
send-suppression flag, and lazily one `PostgresBroker`. Creating an app does no I/O.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import importlib
import os
import threading
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from horsies import env
from horsies.config import AppConfig, QueueMode
from horsies.errors import (
    ConfigurationError,
    DuplicateTaskNameError,
    ErrorCode,
    HorsiesError,
    MultipleValidationErrors,
    NotRegistered,
    SourceLocation,
    TaskDefinitionError,
)
from horsies.logs import get_logger
from horsies.module_files import import_file_module, is_file_locator
from horsies.redact import mask_database_url
from horsies.results import LibraryErrorCode, TaskResult
from horsies.tasks.definition import define_task, task_origin
from horsies.tasks.execution import exception_text
from horsies.tasks.function import AsyncTaskFunction, TaskDecorator, TaskFunction
from horsies.tasks.limits import Limit, check_shared_limit
from horsies.tasks.unique import Unique
from horsies.workflows.spec import WorkflowSpec, bind_app, check_node_queues
from horsies.workflows.status import OnError
from horsies.workflows.store.hooks import WORKFLOW_STORE

if TYPE_CHECKING:
    import logging

    from horsies.broker.postgres import PostgresBroker
    from horsies.retry import RetryPolicy
    from horsies.workflows.nodes import AnyNode, SuccessPolicy

__all__ = ["DEFAULT_GLOB_EXCLUDES", "ROLES", "Horsies", "TaskRegistry"]

P = ParamSpec("P")
T = TypeVar("T")

ROLES = ("producer", "worker", "scheduler")
"""Roles an app can be given with `set_role` (used for logging and the banner)."""

DEFAULT_GLOB_EXCLUDES = ("*_test.py", "test_*.py", "conftest.py")
"""Patterns `expand_module_globs` leaves out unless told otherwise."""

DEFAULT_QUEUE = "default"
DEFAULT_QUEUE_PRIORITY = 100
_GLOB_CHARS = frozenset("*?[]")


class TaskRegistry(Mapping[str, TaskFunction[..., Any]]):
    """Read-only mapping `task name -> TaskFunction`, in registration order.

    `registry[name]` raises `NotRegistered` (E300, also a `KeyError`) for unknown names, while
    `name in registry` and `registry.get(name)` answer False / None. Tasks are added only by
    `@app.task`.
    """

    __slots__ = ("_origins", "_tasks")

    def __init__(self) -> None:
        self._tasks: dict[str, TaskFunction[..., Any]] = {}
        self._origins: dict[str, str] = {}

    def __getitem__(self, name: str) -> TaskFunction[..., Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def get(self, name: str, default: Any = None) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        """The task registered as `name`, or `default`."""
        return self._tasks.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"TaskRegistry({list(self._tasks)!r})"

    def register(self, task_fn: TaskFunction[P, T], origin: str) -> TaskFunction[P, T]:
        """Add a task; return the already registered one if the same source location registered it.

        Raises:
            DuplicateTaskNameError: (E301) the name is registered from another source location.
            TaskDefinitionError: (E102) its `Limit` shares a name with another task's limit but
                not its numbers.
        """
        name = task_fn.task_name
        existing = self._tasks.get(name)
        if existing is not None:
            if self._origins.get(name) == origin:
                # A module imported twice (e.g. under two names) defines the same task again.
                return existing
            error = DuplicateTaskNameError(name)
            location = SourceLocation.from_function(task_fn.__wrapped__)
            if location is not None:
                error = error.with_location(location)
            raise error.with_note(f"first registered at {self._origins.get(name)}")
        check_shared_limit(task_fn.task_limit, (t.task_limit for t in self._tasks.values()))
        self._tasks[name] = task_fn
        self._origins[name] = origin
        return task_fn


def _is_child_process() -> bool:
    return env.flag(env.CHILD_PROCESS)


class Horsies:
    """The application: configuration, task registry and (lazily) the broker.

    Create one per program, at module level, and define tasks with `@app.task`:

        app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://u:p@host/db")))

        @app.task("add")
        def add(a: int, b: int) -> TaskResult[int, TaskError]:
            return TaskResult(ok=a + b)

    Creating the app performs no I/O; the broker (and its connection pools) is created on first use.
    """

    def __init__(self, config: AppConfig) -> None:
        if not isinstance(config, AppConfig):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"Horsies(config) expects an AppConfig, got {type(config).__name__}")
        self.config = config
        self.logger: logging.Logger = get_logger("app")
        self._tasks = TaskRegistry()
        self._discovered: list[str] = []
        self._suppress_sends = False
        self._role = "producer"
        self._broker: PostgresBroker | None = None
        self._broker_lock = threading.Lock()
        if not _is_child_process():  # the worker's main process has said it once already
            self.logger.info(
                "horsies app created (queue_mode=%s, queues=%s)",
                config.queue_mode.name,
                ", ".join(self.get_valid_queue_names()),
            )

    def __repr__(self) -> str:
        return f"<Horsies role={self._role} tasks={len(self._tasks)}>"

    # -- registry ---------------------------------------------------------------------------------

    @property
    def tasks(self) -> TaskRegistry:
        """Registered tasks by name (read-only mapping, registration order)."""
        return self._tasks

    def list_tasks(self) -> list[str]:
        """Names of the registered tasks, in registration order."""
        return list(self._tasks)

    @overload
    def task(
        self, task_name: Callable[P, Coroutine[Any, Any, TaskResult[T, Any]]], /
    ) -> AsyncTaskFunction[P, T]: ...

    @overload
    def task(self, task_name: Callable[P, TaskResult[T, Any]], /) -> TaskFunction[P, T]: ...

    @overload
    def task(
        self,
        task_name: str,
        func: Callable[P, Coroutine[Any, Any, TaskResult[T, Any]]],
        *,
        queue_name: str | None = None,
        good_until: datetime | None = None,
        auto_retry_for: Sequence[str | LibraryErrorCode] | None = None,
        retry_policy: RetryPolicy | None = None,
        time_limit_s: float | None = None,
        unique: Unique | None = None,
        limit: Limit | None = None,
    ) -> AsyncTaskFunction[P, T]: ...

    @overload
    def task(
        self,
        task_name: str,
        func: Callable[P, TaskResult[T, Any]],
        *,
        queue_name: str | None = None,
        good_until: datetime | None = None,
        auto_retry_for: Sequence[str | LibraryErrorCode] | None = None,
        retry_policy: RetryPolicy | None = None,
        time_limit_s: float | None = None,
        unique: Unique | None = None,
        limit: Limit | None = None,
    ) -> TaskFunction[P, T]: ...

    @overload
    def task(
        self,
        task_name: str | None = None,
        func: None = None,
        *,
        queue_name: str | None = None,
        good_until: datetime | None = None,
        auto_retry_for: Sequence[str | LibraryErrorCode] | None = None,
        retry_policy: RetryPolicy | None = None,
        time_limit_s: float | None = None,
        unique: Unique | None = None,
        limit: Limit | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        task_name: str | Callable[..., Any] | None = None,
        func: Callable[..., Any] | None = None,
        **options: Any,
    ) -> Any:
        """Register a task function; use as a decorator or call it.

        Forms: `@app.task`, `@app.task()`, `@app.task("name", queue_name=..., ...)`,
        `app.task("name", fn)`. Without a name the task is called `"<module>.<qualname>"`. Options:
        `queue_name`, `good_until`, `auto_retry_for`, `retry_policy`, `time_limit_s`, `unique`
        (deduplicated sends: see `Unique`), `limit` (rate and concurrency per key: see `Limit`);
        anything else raises `TaskDefinitionError` (E102).

        Checks, in order: options (E102), queue rules (E200 / E103), a return annotation (E100) of
        the form `TaskResult[T, E]` (E101), and that the name is not already registered from
        elsewhere (E301). Returns the `TaskFunction` (or a decorator producing it).
        """
        if callable(task_name) and not isinstance(task_name, str):
            if func is not None:
                raise TaskDefinitionError(
                    "invalid task name", code=ErrorCode.TASK_INVALID_OPTIONS
                ).with_note("use app.task(fn) or app.task('name', fn)")
            return self._register(task_name, None, options)
        if task_name is not None and not isinstance(task_name, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TaskDefinitionError(
                "invalid task name", code=ErrorCode.TASK_INVALID_OPTIONS
            ).with_note(f"task names are strings, got {type(task_name).__name__}")
        if func is not None:
            return self._register(func, task_name, options)
        name = task_name

        def decorator(fn: Callable[P, TaskResult[T, Any]]) -> TaskFunction[P, T]:
            return self._register(fn, name, options)

        return cast(TaskDecorator, decorator)

    def _register(
        self,
        fn: Callable[P, TaskResult[T, Any]],
        task_name: str | None,
        options: Mapping[str, Any],
    ) -> TaskFunction[P, T]:
        task_fn = define_task(self, fn, task_name=task_name, options=options)
        registered = self._tasks.register(task_fn, task_origin(fn))
        if registered is task_fn:
            self.logger.debug("registered task %s", task_fn.task_name)
        return registered

    # -- workflows --------------------------------------------------------------------------------

    def workflow(
        self,
        name: str,
        tasks: Sequence[AnyNode],
        on_error: OnError | str = OnError.FAIL,
        output: AnyNode | None = None,
        success_policy: SuccessPolicy | None = None,
    ) -> WorkflowSpec:
        """Build a workflow spec whose nodes run on this app's queues.

        Each `TaskNode` gets its queue (its own `queue`, else its task's queue, else
        ``"default"``) and, unless it sets one, that queue's priority; the spec gets this app's
        broker, so `spec.start()` works. Nodes without a `node_id` are named
        ``"<slugified name>:<index>"``. `on_error` is `OnError.FAIL` (default) or `OnError.PAUSE`
        (the strings ``"fail"`` / ``"pause"`` work too).

        Raises:
            ConfigurationError: a node's queue is not configured (E103, CUSTOM mode) or is not
                ``"default"`` (E200, DEFAULT mode); several at once as
                `MultipleConfigurationErrors`.
            WorkflowValidationError: the graph is invalid (E003-E017, see `WorkflowSpec`);
                several at once as `MultipleValidationErrors`.
        """
        check_node_queues(self, name, tasks)
        spec = WorkflowSpec(
            name=name,
            tasks=list(tasks),
            on_error=cast(OnError, on_error),
            output=output,
            success_policy=success_policy,
        )
        return bind_app(spec, self)

    # -- task module discovery --------------------------------------------------------------------

    def discover_tasks(self, modules: Sequence[str]) -> None:
        """Record the task modules (dotted paths or file paths) that workers import at start-up.

        Replaces any previous list. Nothing is imported here; see `import_task_modules`. Globs are
        not expanded: use `expand_module_globs` explicitly.
        """
        entries = [modules] if isinstance(modules, str) else list(modules)
        self._discovered = [str(entry) for entry in entries]
        if not _is_child_process() or env.flag(env.CHILD_DISCOVERY_LOGS):
            self.logger.info("Registered %d task module(s) for discovery", len(self._discovered))

    def get_discovered_task_modules(self) -> list[str]:
        """A copy of the list recorded by `discover_tasks`."""
        return list(self._discovered)

    def expand_module_globs(
        self, patterns: Sequence[str], exclude: Sequence[str] | None = None
    ) -> list[str]:
        """Expand file globs into real `.py` paths; dotted module names pass through.

        `exclude` (default `*_test.py`, `test_*.py`, `conftest.py`) is matched against the full
        path and the basename. Output is de-duplicated in first-seen order.
        """
        excludes = tuple(DEFAULT_GLOB_EXCLUDES if exclude is None else exclude)

        def excluded(path: str) -> bool:
            base = os.path.basename(path)
            return any(
                fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(base, pattern)
                for pattern in excludes
            )

        result: list[str] = []
        seen: set[str] = set()

        def keep(entry: str) -> None:
            if entry not in seen:
                seen.add(entry)
                result.append(entry)

        for pattern in patterns:
            if any(char in _GLOB_CHARS for char in pattern):
                for match in sorted(glob.glob(pattern, recursive=True)):
                    if match.endswith(".py") and os.path.isfile(match):
                        real = os.path.realpath(match)
                        if not excluded(real):
                            keep(real)
            elif is_file_locator(pattern):
                if os.path.isfile(pattern):
                    real = os.path.realpath(pattern)
                    if not excluded(real):
                        keep(real)
            else:
                keep(pattern)
        return result

    def import_task_modules(self, modules: Sequence[str] | None = None) -> list[str]:
        """Import task modules (default: the discovered list); return what was imported.

        Returns the absolute real path for file entries and the dotted name otherwise. A file that
        does not exist is skipped with a warning; any other import error propagates. Sends are not
        suppressed here: callers that import user code (worker, scheduler, `check`) suppress around
        it.
        """
        entries = self._discovered if modules is None else list(modules)
        imported: list[str] = []
        for entry in entries:
            if is_file_locator(entry):
                if not os.path.isfile(entry):
                    self.logger.warning("task module not found, skipped: %s", entry)
                    continue
                import_file_module(entry)
                imported.append(os.path.realpath(entry))
            else:
                importlib.import_module(entry)
                imported.append(entry)
        return imported

    # -- broker -----------------------------------------------------------------------------------

    def get_broker(self) -> PostgresBroker:
        """The app's broker: created on first call from `config.broker`, the same object afterwards.

        Raises:
            ValueError: `Failed to get broker: …` when the broker cannot be constructed;
                `ConfigurationError` (E203) in a worker child whose database URL libpq cannot
                parse (elsewhere that is refused when the config is built).
        """
        broker = self._broker
        if broker is not None:
            return broker
        with self._broker_lock:
            if self._broker is None:
                # Checked when the config was built, except in worker children (deferred to here).
                self.config.broker.check_libpq_syntax()
                try:
                    # The driver loads on first use: worker children never need a broker.
                    from horsies.broker import PostgresBroker

                    created = PostgresBroker(self.config.broker, app=self, workflows=WORKFLOW_STORE)
                except Exception as exc:
                    raise ValueError(f"Failed to get broker: {exception_text(exc)}") from exc
                self._broker = created
            return self._broker

    @contextlib.contextmanager
    def using_database(self, database_url: str) -> Generator[Horsies]:
        """Point the app at ``database_url`` for the ``with`` block (tests: see
        `horsies.testing.use_database`); yields the app.

        Inside the block its sends, workflows and results use a new broker of that database (the
        same pool settings); at the end that broker is closed and the app gets its own
        configuration and broker back.
        """
        original_config = self.config.broker
        config = type(original_config).model_validate(
            {**original_config.model_dump(), "database_url": database_url}
        )
        with self._broker_lock:
            original_broker, self._broker = self._broker, None
            self.config.broker = config
        try:
            yield self
        finally:
            with self._broker_lock:
                used, self._broker = self._broker, original_broker
                self.config.broker = original_config
            if used is not None:
                used.close()

    @property
    def broker(self) -> PostgresBroker:
        """Same as `get_broker()`; both spellings exist for compatibility with the original API."""
        return self.get_broker()

    # -- sends ------------------------------------------------------------------------------------

    def suppress_sends(self, value: bool = True) -> None:
        """Make `send`/`send_async`/`schedule` of this app's tasks enqueue nothing.

        While suppressed they return a `"<suppressed>"` handle (err `SEND_SUPPRESSED`). Used while
        importing user modules, so that a module-level `send()` has no side effect.
        """
        self._suppress_sends = bool(value)

    def are_sends_suppressed(self) -> bool:
        """True if `suppress_sends(True)` is in effect or env `TASKLIB_SUPPRESS_SENDS` is `"1"`."""
        return self._suppress_sends or env.flag(env.SUPPRESS_SENDS)

    # -- queues -----------------------------------------------------------------------------------

    def get_valid_queue_names(self) -> list[str]:
        """DEFAULT mode: `["default"]`; CUSTOM mode: the configured queue names in config order."""
        config = self.config
        if config.queue_mode is QueueMode.DEFAULT:
            return [DEFAULT_QUEUE]
        return [queue.name for queue in config.custom_queues or ()]

    def resolve_queue(self, queue_name: str | None) -> tuple[str, int]:
        """Validate a task's queue against the current config; return `(queue, effective priority)`.

        Same rules and errors as `validate_queue_name`; the priority is 100 in DEFAULT mode and the
        queue's configured priority in CUSTOM mode.
        """
        config = self.config
        if config.queue_mode is QueueMode.DEFAULT:
            if queue_name is None:
                return DEFAULT_QUEUE, DEFAULT_QUEUE_PRIORITY
            raise (
                ConfigurationError(
                    "cannot specify queue_name in DEFAULT mode",
                    code=ErrorCode.CONFIG_INVALID_QUEUE_MODE,
                )
                .with_note(f"got queue_name={queue_name!r}")
                .with_help(
                    "remove queue_name, or switch AppConfig to QueueMode.CUSTOM with custom_queues"
                )
            )
        if queue_name is None:
            raise ConfigurationError(
                "queue_name is required in CUSTOM mode", code=ErrorCode.CONFIG_INVALID_QUEUE_MODE
            ).with_help(f"valid queues: {', '.join(self.get_valid_queue_names())}")
        for queue in config.custom_queues or ():
            if queue.name == queue_name:
                return queue_name, queue.priority
        raise ConfigurationError(
            f"invalid queue_name '{queue_name}'", code=ErrorCode.TASK_INVALID_QUEUE
        ).with_note(f"valid queues: {', '.join(self.get_valid_queue_names())}")

    def validate_queue_name(self, queue_name: str | None) -> str:
        """Resolve a task's queue name against the queue mode.

        Raises:
            ConfigurationError: E200 for a name in DEFAULT mode or no name in CUSTOM mode;
                E103 for a name that is not configured.
        """
        return self.resolve_queue(queue_name)[0]

    # -- role -------------------------------------------------------------------------------------

    def set_role(self, role: str) -> None:
        """Record this process's role: `"producer"` (default), `"worker"` or `"scheduler"`."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self._role = role

    @property
    def role(self) -> str:
        """The role set with `set_role` (`"producer"` by default)."""
        return self._role

    # -- validation -------------------------------------------------------------------------------

    def check(self, *, live: bool = False) -> list[HorsiesError]:
        """Validate the app without starting anything; return every problem found.

        Imports every discovered task module with sends suppressed (which also validates the
        workflow specs built at import time) and, with `live=True` and no error so far, runs
        `SELECT 1` on the database. An empty list means success. Never raises for validation
        problems. Modules already imported in this process are not executed again.
        """
        errors: list[HorsiesError] = []
        previous = self._suppress_sends
        self.suppress_sends(True)
        try:
            for entry in self._discovered:
                errors.extend(self._check_import(entry))
        finally:
            self.suppress_sends(previous)
        if live and not errors:
            error = self._check_connectivity()
            if error is not None:
                errors.append(error)
        return errors

    def _check_import(self, entry: str) -> list[HorsiesError]:
        if is_file_locator(entry) and not os.path.isfile(entry):
            error = ConfigurationError(
                f"task module not found: {entry}", code=ErrorCode.APP_LOAD_FAILED
            )
            error.location = None
            return [error]
        try:
            self.import_task_modules([entry])
        except MultipleValidationErrors as exc:
            return list(exc.report.errors)
        except HorsiesError as exc:
            return [exc]
        except Exception as exc:
            error = ConfigurationError(
                f"failed to import module: {entry}", code=ErrorCode.APP_LOAD_FAILED
            ).with_note(f"{type(exc).__name__}: {exc}")
            error.location = None
            return [error]
        return []

    def _check_connectivity(self) -> HorsiesError | None:
        try:
            # Only `horsies check` asks; importing the driver up front would slow every app.
            import psycopg

            self.get_broker()
            conninfo = self.config.broker.conninfo
            with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except HorsiesError as exc:
            return exc
        except Exception as exc:
            error = ConfigurationError(
                "broker connectivity check failed", code=ErrorCode.BROKER_UNREACHABLE
            ).with_note(mask_database_url(f"{type(exc).__name__}: {exc}"))
            error = error.with_note(f"database: {self.config.broker.masked_url}")
            error.location = None
            return error
        return None
