"""A worker child's side: start-up, then one task at a time for as long as the worker lives.

A child is forked by the fork server (:mod:`horsies_worker.fork_server_main`), which calls
:func:`child_entry` in the new process. The app is normally already imported then: the server
imported it once (:func:`load_app`) before forking any child, so every child shares those pages.
Where the server could not (importing the app started threads, and a process with threads must not
fork), the child reads its bootstrap message, takes on the main process's state (:func:`take_on`)
and imports the app itself. It reports readiness over its pipe and then runs the tasks the parent
sends (:func:`~horsies_worker.execution.execute_task`).

Pipe protocol (tuples, pickled, framed by ``Connection.send_bytes``):

* parent → child: the :class:`~horsies_worker.spawn.Bootstrap` first when the child imports the app
  itself; then ``("run", task_id, task_name, args_json, kwargs_json, run_facts)``, ``("stop",)``
  (``run_facts`` are the fields of :class:`~horsies_worker.execution.RunFacts`); ``async def``
  tasks are served several at once by :mod:`horsies_worker.async_runner`
* child → parent: ``("ready", pid)``, ``("init_error", text)``,
  ``("result", task_id, result_json, ok)``
"""

from __future__ import annotations

import contextlib
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
from horsies_worker.footprint import release_free_memory
from horsies_worker.parent_death import signal_when_parent_dies
from horsies_worker.spawn import Bootstrap, ChildInit

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = [
    "child_entry",
    "child_main",
    "init_error_text",
    "load_app",
    "take_on",
]


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this child when its parent, the fork server, dies (the fork server dies with the
    worker main process in the same way).

    A worker killed with ``kill -9`` is gone for good: its tasks are failed or requeued by another
    worker's reaper, so letting an orphaned child finish (and repeat side effects) helps nobody.
    """
    if not signal_when_parent_dies(signal.SIGKILL, parent_pid):
        os._exit(1)


def load_app(init: ChildInit) -> Horsies:
    """Make this process a worker child and import its app; return the app.

    Ignores SIGINT (the parent coordinates shutdown), marks the process as a worker child,
    applies the log level and format, prepends the sys.path roots, locates the app with the
    canonical locator (factories allowed) and imports the task modules with sends suppressed, so
    that importing them enqueues nothing. Run by the fork server, whose children inherit all of
    it, or by a child that imports the app itself.
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


def init_error_text(exc: BaseException) -> str:
    """How an exception raised by :func:`load_app` is reported to the main process."""
    text = "".join(traceback.format_exception(exc))
    return f"{type(exc).__name__}: {exc}\n{text}"


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


def take_on(bootstrap: Bootstrap) -> None:
    """Become what a new interpreter started by the main process now would be before it imports
    the app: its ``sys.path`` and ``sys.argv`` (as ``multiprocessing`` spawn restores them), its
    environment and working directory."""
    sys.path[:] = bootstrap.sys_path
    sys.argv[:] = bootstrap.sys_argv
    if dict(os.environ) != bootstrap.environ:
        os.environ.clear()
        os.environ.update(bootstrap.environ)
    if bootstrap.cwd is not None:
        with contextlib.suppress(OSError):  # gone meanwhile: keep the inherited one
            os.chdir(bootstrap.cwd)


def child_entry(conn_fd: int, exit_fd: int, parent_pid: int, app: Horsies | None) -> None:
    """Run a child just forked by the fork server, whose pid is ``parent_pid``, with the app the
    server imported (``app``), or None: then read the bootstrap from the pipe and import the app.

    Dies with the fork server, keeps its descriptors (the pipe, and without pidfds the exit pipe's
    write end, else -1) from the processes a task may start or fork, reports ``("ready", pid)``
    (or ``("init_error", text)`` and exits 1), then serves the pipe (:func:`child_main`).
    """
    _die_with_parent(parent_pid)
    fds = tuple(fd for fd in (conn_fd, exit_fd) if fd >= 0)
    for fd in fds:
        os.set_inheritable(fd, False)
    _blank_in_forks(fds)
    conn = Connection(conn_fd)
    if app is None:
        try:
            bootstrap = cast(Bootstrap, pickle.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            sys.exit(1)
        take_on(bootstrap)
        try:
            app = load_app(bootstrap.init)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.send(("init_error", init_error_text(exc)))
            conn.close()
            sys.exit(1)
        release_free_memory()
    conn.send(("ready", os.getpid()))
    child_main(conn, app)


def _is_async(app: Horsies, task_name: object) -> bool:
    task = app.tasks.get(str(task_name))
    return task is not None and task.is_async


def child_main(conn: Connection, app: Horsies) -> None:
    """Serve ``run`` requests on ``conn`` with ``app`` until ``stop``, end-of-file on the pipe, or
    a broken pipe (called by :func:`child_entry` once the child reported readiness)."""
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
