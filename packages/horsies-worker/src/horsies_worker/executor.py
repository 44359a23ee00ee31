"""Executor: the child-process side of the worker (04 §3 and §7 steps 5-9).

A child is started once by :mod:`horsies_worker.children`, initialises itself
(:func:`initialize_child`), reports readiness over its pipe and then runs one task at a time for as
long as the worker lives.
:func:`execute_task` turns whatever happens to one task (return value, exception, undecodable
arguments, unencodable result) into one encoded ``TaskResult``; nothing a task does can stop the
child's loop.

Workflow nodes carry reserved kwargs (the context and meta payloads); :func:`execute_task` swaps
them for the ``workflow_ctx`` / ``workflow_meta`` parameters the function declares.

Pipe protocol (tuples, pickled by ``multiprocessing.Connection``):

* parent → child: ``("run", task_id, task_name, args_json, kwargs_json)``, ``("stop",)``
* child → parent: ``("ready", pid)``, ``("init_error", text)``,
  ``("result", task_id, result_json, ok)``
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import inspect
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from horsies.codec import (
    PayloadTooLargeError,
    SerializationError,
    args_from_json,
    check_payload_size,
    kwargs_from_json,
    task_result_to_json,
)
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.workflows.context import WorkflowContext, WorkflowMeta
from horsies.workflows.engine import CTX_KEY, META_KEY

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from horsies.app import Horsies
    from horsies.tasks.decorator import TaskFunction

CHILD_ENV_FLAG = "HORSIES_CHILD_PROCESS"
SUPPRESS_ENV_FLAG = "TASKLIB_SUPPRESS_SENDS"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ChildInit:
    """What a child needs to initialise itself; pickled into the spawned process."""

    locator: str
    """Canonical locator of the app (``<module>:<var>`` or ``<real file path>:<var>``)."""
    loglevel: str = "INFO"
    task_modules: list[str] = field(default_factory=lambda: [])
    sys_path_roots: list[str] = field(default_factory=lambda: [])
    parent_pid: int = 0
    """Pid of the worker main process; the child exits if it is gone."""
    suppress_env: str | None = None
    """The parent's own ``TASKLIB_SUPPRESS_SENDS`` value, restored once the imports are done."""


@contextlib.contextmanager
def child_spawn_environment() -> Generator[None]:
    """Environment for spawning a child: it starts as a worker child with sends suppressed.

    Spawn re-runs the parent's ``__main__`` script in the child (as ``__mp_main__``) before our code
    gets control, so suppression (D35) and the child flag must already be in the environment the
    child inherits. The parent's own variables are restored when the block ends.
    """
    saved = {name: os.environ.get(name) for name in (CHILD_ENV_FLAG, SUPPRESS_ENV_FLAG)}
    os.environ[CHILD_ENV_FLAG] = "1"
    os.environ[SUPPRESS_ENV_FLAG] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------------------------------
# Result encoding helpers


def error_result_json(code: LibraryErrorCode | str, message: str, data: Any = None) -> str:
    """Encode an err ``TaskResult`` built by the worker itself.

    Never raises: if even this cannot be encoded (which would be a bug), a minimal hand-written
    document with the same shape is returned.
    """
    try:
        return task_result_to_json(
            TaskResult(err=TaskError(error_code=code, message=message, data=data))
        )
    except Exception:
        try:
            return task_result_to_json(
                TaskResult(err=TaskError(error_code=code, message=message, data=None))
            )
        except Exception:
            return (
                '{"__task_result__":true,"ok":null,"err":{"__task_error__":true,'
                f'"error_code":"{code!s}","message":"worker failed to encode its error",'
                '"data":null}}'
            )


def _exception_result_json(code: LibraryErrorCode, message: str, exc: BaseException) -> str:
    """Encode an err result that carries ``exc`` (falls back to no exception if that fails)."""
    try:
        return task_result_to_json(
            TaskResult(
                err=TaskError(
                    error_code=code,
                    message=message,
                    data={"exception_type": type(exc).__name__},
                    exception=exc,
                )
            )
        )
    except Exception:
        return error_result_json(code, message, {"exception_type": type(exc).__name__})


# --------------------------------------------------------------------------------------------------
# Workflow injection (03 §10.2, §10.3, D14)

CTX_PARAM = "workflow_ctx"
"""Parameter that receives a `WorkflowContext` when the node lists `workflow_ctx_from`."""
META_PARAM = "workflow_meta"
"""Parameter that receives a `WorkflowMeta` (None outside a workflow)."""

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True, slots=True)
class InjectionParams:
    """Which workflow parameters a task function declares (by name, passable as a keyword)."""

    wants_ctx: bool
    wants_meta: bool


@functools.cache
def injection_params(task_fn: TaskFunction[..., Any]) -> InjectionParams:
    """Inspect `task_fn`'s signature once per function (cached for the life of the child).

    A ``**kwargs`` catch-all does not count: only a parameter literally named ``workflow_ctx`` /
    ``workflow_meta`` asks for an injection.
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

    return InjectionParams(wants_ctx=declares(CTX_PARAM), wants_meta=declares(META_PARAM))


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


def inject_workflow_params(task_fn: TaskFunction[..., Any], kwargs: dict[str, Any]) -> None:
    """Replace the engine's reserved kwargs with the parameters the function asks for (in place).

    The reserved keys are always removed, so they never reach the task. ``workflow_ctx`` is set
    only when the function declares it and the node carries a context; ``workflow_meta`` is set
    when the function declares it and the caller did not pass one: a `WorkflowMeta` inside a
    workflow, None outside (D14).

    Raises:
        SerializationError: a reserved payload is malformed.
    """
    ctx_payload = kwargs.pop(CTX_KEY, None)
    meta_payload = kwargs.pop(META_KEY, None)
    wanted = injection_params(task_fn)
    if wanted.wants_ctx and ctx_payload is not None:
        kwargs[CTX_PARAM] = _workflow_context(ctx_payload)
    if wanted.wants_meta and META_PARAM not in kwargs:
        kwargs[META_PARAM] = None if meta_payload is None else _workflow_meta(meta_payload)


def execute_task(
    app: Horsies, task_name: str, args_json: str | None, kwargs_json: str | None
) -> tuple[str, bool]:
    """Run one task in this process and return ``(result_json, ok)``.

    Steps (04 §7): resolve the name in ``app.tasks`` (unknown → ``WORKER_RESOLUTION_ERROR``);
    decode the arguments and swap the workflow payloads for ``workflow_ctx`` / ``workflow_meta``
    (``SerializationError`` or malformed JSON → ``WORKER_SERIALIZATION_ERROR``); call the task
    through ``run_task_function`` (02 §3 rules); encode the ``TaskResult``
    (``SerializationError``, or a result above ``AppConfig.max_payload_bytes`` →
    ``WORKER_SERIALIZATION_ERROR``, anything else → ``TASK_EXCEPTION``).
    Any other exception escaping those steps, ``KeyboardInterrupt`` included, becomes
    ``TASK_EXCEPTION``. Never raises.
    """
    from horsies.tasks.decorator import run_task_function

    # Step 5: resolve.
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
    try:
        # Step 6: decode. Malformed JSON surfaces as ValueError (orjson.JSONDecodeError); it is the
        # same failure as an undecodable value, so both map to WORKER_SERIALIZATION_ERROR.
        try:
            args = args_from_json(args_json)
            kwargs = kwargs_from_json(kwargs_json)
            inject_workflow_params(task_fn, kwargs)
        except (SerializationError, ValueError) as exc:
            return (
                error_result_json(LibraryErrorCode.WORKER_SERIALIZATION_ERROR, str(exc)),
                False,
            )
        # Step 7: call (02 §3: the wrapper turns task exceptions into UNHANDLED_EXCEPTION).
        result: Any = run_task_function(task_fn, args, kwargs)
        if result is None:
            return (
                error_result_json(
                    LibraryErrorCode.TASK_EXCEPTION, f"Task {task_name} returned None"
                ),
                False,
            )
        typed = cast(
            "TaskResult[Any, Any]",
            result if isinstance(result, TaskResult) else TaskResult[Any, Any](ok=result),
        )
        # Step 8: encode (and keep within AppConfig.max_payload_bytes).
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
            return (
                error_result_json(LibraryErrorCode.WORKER_SERIALIZATION_ERROR, str(exc)),
                False,
            )
        return encoded, typed.is_ok()
    except BaseException as exc:
        return (
            _exception_result_json(
                LibraryErrorCode.TASK_EXCEPTION, f"{type(exc).__name__}: {exc}", exc
            ),
            False,
        )


# --------------------------------------------------------------------------------------------------
# Child process entry point


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this child when the worker main process dies.

    A worker killed with ``kill -9`` is gone for good: its tasks are failed or requeued by another
    worker's reaper, so letting an orphaned child finish (and repeat side effects) helps nobody.
    Best effort: a no-op on other platforms.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:
        # The parent died before prctl took effect.
        os._exit(1)


def initialize_child(init: ChildInit) -> Horsies:
    """Initialise this child process (04 §3) and return its app.

    Ignores SIGINT (the parent coordinates shutdown), marks the process as a worker child,
    applies the log level, prepends the sys.path roots, locates the app with the canonical
    locator (factories allowed) and imports the task modules with sends suppressed (D35).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[CHILD_ENV_FLAG] = "1"

    from horsies.logs import configure_logging

    configure_logging(init.loglevel)
    for root in reversed(init.sys_path_roots):
        if root not in sys.path:
            sys.path.insert(0, root)

    os.environ[SUPPRESS_ENV_FLAG] = "1"
    try:
        app = _app_from_spawned_main(init.locator)
        if app is None:
            from horsies.locator import locate_app

            app = locate_app(init.locator, allow_factory=True).app
        with contextlib.suppress(Exception):
            app.set_role("worker")
        modules = list(dict.fromkeys([*init.task_modules, *app.get_discovered_task_modules()]))
        if modules:
            imported = app.import_task_modules(modules)
            if os.environ.get("HORSIES_DEBUG_IMPORTS") == "1":
                from horsies.logs import get_logger

                get_logger("worker").info(
                    "debug_imports: child %s sys.path[:5]=%s imported=%s",
                    os.getpid(),
                    sys.path[:5],
                    imported,
                )
    finally:
        if init.suppress_env is None:
            os.environ.pop(SUPPRESS_ENV_FLAG, None)
        else:
            os.environ[SUPPRESS_ENV_FLAG] = init.suppress_env
    return app


def _app_from_spawned_main(locator: str) -> Horsies | None:
    """The app from ``__mp_main__`` when the locator names the script spawn already re-ran.

    ``run_worker(app)`` called from a script gives a ``<script path>:<var>`` locator; importing that
    file again would execute the script a second time in every child.
    """
    from horsies.app import Horsies

    main = sys.modules.get("__mp_main__")
    main_file = getattr(main, "__file__", None)
    path, sep, variable = locator.rpartition(":")
    if main is None or not main_file or not sep or not path.endswith(".py"):
        return None
    if os.path.realpath(path) != os.path.realpath(main_file):
        return None
    value = getattr(main, variable, None)
    if callable(value) and not isinstance(value, Horsies):
        value = value()
    return value if isinstance(value, Horsies) else None


def child_main(conn: Connection, init: ChildInit) -> None:
    """Entry point of a worker child (target of the spawned ``multiprocessing.Process``).

    Initialises, reports ``("ready", pid)`` (or ``("init_error", text)`` and exits 1), then serves
    ``run`` requests until ``stop``, end-of-file on the pipe, or a broken pipe.
    """
    _die_with_parent(init.parent_pid)
    try:
        app = initialize_child(init)
    except BaseException as exc:
        text = "".join(traceback.format_exception(exc))
        with contextlib.suppress(Exception):
            conn.send(("init_error", f"{type(exc).__name__}: {exc}\n{text}"))
        conn.close()
        sys.exit(1)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message: tuple[Any, ...] = conn.recv()
        except (EOFError, OSError):
            break
        except BaseException:
            # A message we cannot unpickle; nothing to answer to. Keep serving.
            traceback.print_exc()
            continue
        kind = message[0]
        if kind == "stop":
            break
        if kind != "run":
            continue
        _, task_id, task_name, args_json, kwargs_json = message
        result_json, ok = execute_task(app, str(task_name), args_json, kwargs_json)
        try:
            # As Connection.send, without a new ForkingPickler per message (see children.py).
            message = ("result", task_id, result_json, ok)
            conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            break
    with contextlib.suppress(Exception):
        conn.close()
