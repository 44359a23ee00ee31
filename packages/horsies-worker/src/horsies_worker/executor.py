"""Executor: the child-process side of the worker (04 §3 and §7 steps 5-9).

A child is started once by :mod:`horsies_worker.children`, initialises itself
(:func:`initialize_child`), reports readiness over its pipe and then runs one task at a time for as
long as the worker lives.
:func:`execute_task` turns whatever happens to one task (return value, exception, undecodable
arguments, unencodable result) into one encoded ``TaskResult``; nothing a task does can stop the
child's loop.

Workflow nodes carry reserved kwargs (the context and meta payloads); :func:`execute_task` swaps
them for the ``workflow_ctx`` / ``workflow_meta`` parameters the function declares.

A child is a plain ``python -c`` process started by :func:`spawn_child` (``subprocess``, no
``multiprocessing`` start method: no resource-tracker process, no re-run of the parent's
``__main__``). It inherits two descriptors: one end of a socket pair, wrapped in a
``multiprocessing.connection.Connection`` on both sides, and the write end of an exit pipe whose
read end (the *sentinel*) becomes readable when the child is gone. The parent first sends the
bootstrap (the pickled :class:`ChildInit`, its ``sys.path`` and ``sys.argv``); then the pipe carries
the protocol.

Pipe protocol (tuples, pickled, framed by ``Connection.send_bytes``):

* parent → child: ``("run", task_id, task_name, args_json, kwargs_json)``, ``("stop",)``
* child → parent: ``("ready", pid)``, ``("init_error", text)``,
  ``("result", task_id, result_json, ok)``
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import os
import pickle
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from horsies import env
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
from horsies.workflows.context import WorkflowContext, WorkflowMeta

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

    from horsies.app import Horsies
    from horsies.tasks.function import TaskFunction

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ChildInit:
    """What a child needs to initialise itself; pickled into the child's bootstrap message."""

    locator: str
    """Canonical locator of the app (``<module>:<var>`` or ``<real file path>:<var>``)."""
    loglevel: str = "INFO"
    task_modules: list[str] = field(default_factory=lambda: [])
    sys_path_roots: list[str] = field(default_factory=lambda: [])
    parent_pid: int = 0
    """Pid of the worker main process; the child exits if it is gone."""
    suppress_env: str | None = None
    """The parent's own ``TASKLIB_SUPPRESS_SENDS`` value, restored once the imports are done."""


def child_environment() -> dict[str, str]:
    """Environment of a new child: this process's, marked as a worker child with sends suppressed.

    Both variables hold from the child's first instruction: suppression (D35) must hold while it
    imports the app, and ``HORSIES_CHILD_PROCESS`` tells the library it runs in a worker child
    (quiet configuration logs, database URL checked when the broker is first needed). The child
    restores the parent's own ``TASKLIB_SUPPRESS_SENDS`` once its imports are done.
    """
    environment = dict(os.environ)
    environment[env.CHILD_PROCESS] = "1"
    environment[env.SUPPRESS_SENDS] = "1"
    return environment


@dataclass(frozen=True, slots=True)
class _Bootstrap:
    """The first message on a child's pipe (as ``multiprocessing`` spawn's preparation data)."""

    init: ChildInit
    sys_path: list[str]
    sys_argv: list[str]


class SpawnedChild:
    """A running child process: pid, sentinel and exit status, like ``multiprocessing.Process``.

    ``sentinel`` is the read end of the exit pipe; it becomes readable (EOF) when the child has
    exited or been killed. ``exitcode`` is None until the child has been reaped, then its exit
    status (``-N`` when killed by signal N).
    """

    def __init__(self, popen: subprocess.Popen[bytes], sentinel: int) -> None:
        self._popen = popen
        self._sentinel = sentinel

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def sentinel(self) -> int:
        return self._sentinel

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds) for the child to exit, and reap it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM (a no-op once the child has been reaped)."""
        self._popen.terminate()

    def kill(self) -> None:
        """SIGKILL (a no-op once the child has been reaped)."""
        self._popen.kill()

    def close(self) -> None:
        """Close the sentinel (once the child's exit has been handled)."""
        if self._sentinel >= 0:
            os.close(self._sentinel)
            self._sentinel = -1


def _interpreter_flags() -> list[str]:
    """This interpreter's command-line flags (``-B``, ``-X ...``, ``-W ...``, ...), as spawn passes
    them on (the stdlib helper ``multiprocessing`` uses; not in the type stubs)."""
    helper = getattr(subprocess, "_args_from_interpreter_flags")  # noqa: B009
    flags = cast("Callable[[], list[str]]", helper)
    return flags()


def spawn_child(init: ChildInit) -> tuple[SpawnedChild, Connection]:
    """Start a worker child running :func:`child_main`; return it and the parent's end of its pipe,
    the bootstrap already sent.

    The child is a new interpreter (same executable and interpreter flags) in the parent's process
    group, with stdin on ``/dev/null`` and the parent's stdout and stderr. It inherits only its end
    of the socket pair and the write end of the exit pipe (``close_fds``), so the parent's end of
    the pipe sees EOF, and the sentinel becomes readable, exactly when the child is gone.
    """
    import socket
    from multiprocessing.connection import Connection

    parent_sock, child_sock = socket.socketpair()
    sentinel, exit_w = os.pipe()
    child_fd = child_sock.fileno()
    try:
        command = [
            sys.executable,
            *_interpreter_flags(),
            "-c",
            "from horsies_worker.executor import child_entry; "
            f"child_entry(conn_fd={child_fd}, exit_fd={exit_w})",
        ]
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            pass_fds=(child_fd, exit_w),
            env=child_environment(),
        )
    except BaseException:
        parent_sock.close()
        os.close(sentinel)
        raise
    finally:
        # Our copies of the child's ends must go: EOF and the sentinel depend on it.
        child_sock.close()
        os.close(exit_w)
    conn = Connection(parent_sock.detach())
    child = SpawnedChild(popen, sentinel)
    bootstrap = _Bootstrap(init=init, sys_path=list(sys.path), sys_argv=list(sys.argv))
    with contextlib.suppress(OSError):
        # A child that died at once: its sentinel reports it.
        conn.send_bytes(pickle.dumps(bootstrap, pickle.HIGHEST_PROTOCOL))
    return child, conn


# --------------------------------------------------------------------------------------------------
# Result encoding helpers


def error_result_json(
    code: LibraryErrorCode | str,
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
    from horsies.tasks.execution import run_task_function

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
            import ctypes

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
    os.environ[env.CHILD_PROCESS] = "1"

    from horsies.logs import configure_logging

    configure_logging(init.loglevel)
    for root in reversed(init.sys_path_roots):
        if root not in sys.path:
            sys.path.insert(0, root)

    os.environ[env.SUPPRESS_SENDS] = "1"
    try:
        from horsies.locator import locate_app

        app = locate_app(init.locator, allow_factory=True).app
        with contextlib.suppress(Exception):
            app.set_role("worker")
        modules = list(dict.fromkeys([*init.task_modules, *app.get_discovered_task_modules()]))
        if modules:
            imported = app.import_task_modules(modules)
            if env.flag(env.DEBUG_IMPORTS):
                from horsies.logs import get_logger

                get_logger("worker").info(
                    "debug_imports: child %s sys.path[:5]=%s imported=%s",
                    os.getpid(),
                    sys.path[:5],
                    imported,
                )
    finally:
        if init.suppress_env is None:
            os.environ.pop(env.SUPPRESS_SENDS, None)
        else:
            os.environ[env.SUPPRESS_SENDS] = init.suppress_env
    return app


def _release_free_memory() -> None:
    """Give the memory freed during start-up back to the system (glibc only; best effort).

    Importing the app allocates and frees a lot (compiling sources without cached bytecode,
    building validators), and glibc keeps freed heap pages unless asked. Called once, before the
    first task, so a long-lived child does not carry its start-up peak.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).malloc_trim(0)


def child_entry(conn_fd: int, exit_fd: int) -> None:
    """Bootstrap of a child started by :func:`spawn_child` (its ``python -c`` command calls this).

    Keeps both inherited descriptors from the processes a task may start, reads the bootstrap (the
    parent's ``sys.path`` and ``sys.argv``, restored as ``multiprocessing`` spawn did, and the
    `ChildInit`), then runs :func:`child_main`. Exits 1 if the parent is gone before that.
    """
    from multiprocessing.connection import Connection

    for fd in (conn_fd, exit_fd):
        os.set_inheritable(fd, False)
    conn = Connection(conn_fd)
    try:
        bootstrap = cast(_Bootstrap, pickle.loads(conn.recv_bytes()))
    except (EOFError, OSError):
        sys.exit(1)
    sys.path[:] = bootstrap.sys_path
    sys.argv[:] = bootstrap.sys_argv
    child_main(conn, bootstrap.init)


def child_main(conn: Connection, init: ChildInit) -> None:
    """Serve as a worker child over ``conn`` (called by :func:`child_entry`).

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
    _release_free_memory()
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
