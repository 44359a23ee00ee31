"""A worker child's side: start-up, then one task at a time for as long as the worker lives.

A child is started by :func:`~horsies_worker.spawn.spawn_child`, whose ``python -c`` command calls
:func:`child_entry`. It initialises itself (:func:`initialize_child`), reports readiness over its
pipe and then runs the tasks the parent sends (:func:`~horsies_worker.execution.execute_task`).

Pipe protocol (tuples, pickled, framed by ``Connection.send_bytes``):

* parent → child: ``("run", task_id, task_name, args_json, kwargs_json, run_facts)``,
  ``("stop",)`` (``run_facts`` are the fields of :class:`~horsies_worker.execution.RunFacts`);
  ``async def`` tasks are served several at once by :mod:`horsies_worker.async_runner`
* child → parent: ``("ready", pid)``, ``("init_error", text)``,
  ``("result", task_id, result_json, ok)``
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, cast

from horsies import env
from horsies.locator import locate_app
from horsies.logs import configure_logging, get_logger, set_log_context

from horsies_worker.execution import RunFacts, execute_task
from horsies_worker.parent_death import signal_when_parent_dies
from horsies_worker.spawn import Bootstrap, ChildInit

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["child_entry", "child_main", "initialize_child"]


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this child when the worker main process dies.

    A worker killed with ``kill -9`` is gone for good: its tasks are failed or requeued by another
    worker's reaper, so letting an orphaned child finish (and repeat side effects) helps nobody.
    """
    if not signal_when_parent_dies(signal.SIGKILL, parent_pid):
        os._exit(1)


def initialize_child(init: ChildInit) -> Horsies:
    """Initialise this child process and return its app.

    Ignores SIGINT (the parent coordinates shutdown), marks the process as a worker child,
    applies the log level and format, prepends the sys.path roots, locates the app with the
    canonical locator (factories allowed) and imports the task modules with sends suppressed, so
    that importing them enqueues nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[env.CHILD_PROCESS] = "1"

    configure_logging(init.loglevel, log_format=init.log_format)
    set_log_context(role="worker-child", worker_id=init.worker_id)
    for root in reversed(init.sys_path_roots):
        if root not in sys.path:
            sys.path.insert(0, root)

    os.environ[env.SUPPRESS_SENDS] = "1"
    try:
        app = locate_app(init.locator, allow_factory=True).app
        with contextlib.suppress(Exception):
            app.set_role("worker")
        modules = list(dict.fromkeys([*init.task_modules, *app.get_discovered_task_modules()]))
        if modules:
            imported = app.import_task_modules(modules)
            if env.flag(env.DEBUG_IMPORTS):
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
            import ctypes  # prctl and malloc_trim exist only on Linux

            ctypes.CDLL(None).malloc_trim(0)


def _blank_in_forks(fds: tuple[int, ...]) -> None:
    """Keep the worker's pipes out of any process a task forks (``os.fork()``, a ``multiprocessing``
    pool with the fork start method): after a fork, the new process points these descriptors at
    ``/dev/null``. Otherwise a descendant that outlives this child would hold the pipe open, and
    a worker without pidfds would see the child's death only when the descendant exits. The
    numbers stay valid, so nothing the descendant later opens can be closed by mistake."""

    def blank() -> None:
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDWR)
            for fd in fds:
                os.dup2(null, fd, inheritable=False)
            os.close(null)

    os.register_at_fork(after_in_child=blank)


def child_entry(conn_fd: int, exit_fd: int) -> None:
    """Bootstrap of a child started by :func:`spawn_child` (its ``python -c`` command calls this).

    Keeps its inherited descriptors (the pipe, and without pidfds the exit pipe's write end, else
    -1) from the processes a task may start or fork, reads the bootstrap (the parent's
    ``sys.path`` and ``sys.argv``, restored as ``multiprocessing`` spawn did, and the `ChildInit`),
    then runs :func:`child_main`. Exits 1 if the parent is gone before that.
    """
    fds = tuple(fd for fd in (conn_fd, exit_fd) if fd >= 0)
    for fd in fds:
        os.set_inheritable(fd, False)
    _blank_in_forks(fds)
    conn = Connection(conn_fd)
    try:
        bootstrap = cast(Bootstrap, pickle.loads(conn.recv_bytes()))
    except (EOFError, OSError):
        sys.exit(1)
    sys.path[:] = bootstrap.sys_path
    sys.argv[:] = bootstrap.sys_argv
    child_main(conn, bootstrap.init)


def _is_async(app: Horsies, task_name: object) -> bool:
    task = app.tasks.get(str(task_name))
    return task is not None and task.is_async


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
        if kind == "runs" or (kind == "run" and _is_async(app, message[2])):
            # Here, not at the top: a child that runs only def tasks never loads asyncio. (Only
            # async tasks come several to a message.)
            from horsies_worker.async_runner import serve_async

            serve_async(conn, app, message)  # serves the pipe from the loop until the end
            break
        if kind != "run":
            continue
        _, task_id, task_name, args_json, kwargs_json, run = message
        facts = RunFacts.from_wire(run)
        result_json, ok = execute_task(app, str(task_name), args_json, kwargs_json, facts)
        try:
            # As Connection.send, without a new ForkingPickler per message (see children.py).
            message = ("result", task_id, result_json, ok)
            conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            break
    with contextlib.suppress(Exception):
        conn.close()
