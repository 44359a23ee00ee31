"""Starting a worker child: the parent's side.

A child is a plain ``python -c`` process started by :func:`spawn_child` (``subprocess``, no
``multiprocessing`` start method: no resource-tracker process, no re-run of the parent's
``__main__``). It inherits one end of a socket pair, wrapped in a
``multiprocessing.connection.Connection`` on both sides. The parent watches the child's *sentinel*,
a descriptor that becomes readable when the child is gone: a pidfd on Linux 5.3 and later, which
nothing the child does can hold open, else the read end of an exit pipe whose write end the child
inherits. The parent first sends the :class:`Bootstrap` (the pickled :class:`ChildInit`, its
``sys.path`` and ``sys.argv``); then the pipe carries the protocol of
:mod:`horsies_worker.child_main`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Final, cast

from horsies import env
from horsies.logs import LogFormat

__all__ = ["Bootstrap", "ChildInit", "SpawnedChild", "child_environment", "spawn_child"]


@dataclass(frozen=True, slots=True)
class ChildInit:
    """What a child needs to initialise itself; pickled into the child's bootstrap message."""

    locator: str
    """Canonical locator of the app (``<module>:<var>`` or ``<real file path>:<var>``)."""
    loglevel: str = "INFO"
    log_format: LogFormat = "text"
    """The worker main process's log format: children log as it does."""
    worker_id: str = ""
    """The worker's id, in every JSON record of the child."""
    task_modules: list[str] = field(default_factory=lambda: [])
    sys_path_roots: list[str] = field(default_factory=lambda: [])
    parent_pid: int = 0
    """Pid of the worker main process; the child exits if it is gone."""
    suppress_env: str | None = None
    """The parent's own ``TASKLIB_SUPPRESS_SENDS`` value, restored once the imports are done."""


def child_environment() -> dict[str, str]:
    """Environment of a new child: this process's, marked as a worker child with sends suppressed.

    Both variables hold from the child's first instruction: suppression must hold while it imports
    the app (a module-level ``send()`` would otherwise enqueue once per child), and
    ``HORSIES_CHILD_PROCESS`` tells the library it runs in a worker child (quiet configuration
    logs, database URL checked when the broker is first needed). The child restores the parent's
    own ``TASKLIB_SUPPRESS_SENDS`` once its imports are done.
    """
    environment = dict(os.environ)
    environment[env.CHILD_PROCESS] = "1"
    environment[env.SUPPRESS_SENDS] = "1"
    return environment


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """The first message on a child's pipe (as ``multiprocessing`` spawn's preparation data)."""

    init: ChildInit
    sys_path: list[str]
    sys_argv: list[str]


class SpawnedChild:
    """A running child process: pid, sentinel and exit status, like ``multiprocessing.Process``.

    ``sentinel`` (a pidfd, or the read end of the exit pipe) becomes readable when the child has
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


def _pidfds_work() -> bool:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        os.close(pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3, or a sandbox that forbids the call
        return False
    return True


_PIDFDS: Final = _pidfds_work()
"""Whether this host gives pidfds: a child that forked (a pool, a daemon) and then died is seen
at once, while its descendants may keep every pipe it had open for as long as they live."""


def spawn_child(init: ChildInit) -> tuple[SpawnedChild, Connection]:
    """Start a worker child running ``child_main.child_main``; return it and the parent's end of
    its pipe, the bootstrap already sent.

    The child is a new interpreter (same executable and interpreter flags) in the parent's process
    group, with stdin on ``/dev/null`` and the parent's stdout and stderr. It inherits only its end
    of the socket pair and, without pidfds, the write end of the exit pipe (``close_fds``).
    """
    parent_sock, child_sock = socket.socketpair()
    sentinel, exit_w = (-1, -1) if _PIDFDS else os.pipe()
    child_fd = child_sock.fileno()
    passed = (child_fd,) if _PIDFDS else (child_fd, exit_w)
    try:
        command = [
            sys.executable,
            *_interpreter_flags(),
            "-c",
            "from horsies_worker.child_main import child_entry; "
            f"child_entry(conn_fd={child_fd}, exit_fd={exit_w})",
        ]
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            pass_fds=passed,
            env=child_environment(),
        )
        if _PIDFDS:
            # Not yet waited for, so the pid is still the child's even if it has already died.
            sentinel = os.pidfd_open(popen.pid)
    except BaseException:
        parent_sock.close()
        if sentinel >= 0:
            os.close(sentinel)
        raise
    finally:
        # Our copies of the child's ends must go: EOF and the sentinel depend on it.
        child_sock.close()
        if exit_w >= 0:
            os.close(exit_w)
    conn = Connection(parent_sock.detach())
    child = SpawnedChild(popen, sentinel)
    bootstrap = Bootstrap(init=init, sys_path=list(sys.path), sys_argv=list(sys.argv))
    with contextlib.suppress(OSError):
        # A child that died at once: its sentinel reports it.
        conn.send_bytes(pickle.dumps(bootstrap, pickle.HIGHEST_PROTOCOL))
    return child, conn
