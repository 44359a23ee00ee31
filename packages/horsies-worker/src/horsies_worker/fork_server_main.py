"""The fork server's side: a small process that imports the app once and forks every worker child.

Why a fork server: a child forked from a process that has already imported the interpreter's
start-up modules, pydantic, horsies and the app shares those pages with it (copy-on-write) instead
of building its own copy, so N children cost far less than N new interpreters. The worker's main
process cannot fork them itself once it runs threads and an event loop; the fork server never does
either. Before forking, it freezes its objects (``gc.freeze()``), so the children's collections
never write to the pages they share.

The server is started by :class:`~horsies_worker.fork_server.ForkServer` (forked from the main
process early in ``horsies worker``, or a new interpreter running :func:`serve_fd`) and talks to
it over a ``SOCK_SEQPACKET`` socket pair, one pickled tuple per message, descriptors passed with
``SCM_RIGHTS``:

* server → main: ``("up", pid)`` once it is ready; ``("loaded",)``, ``("load_error", text)`` or
  ``("threaded", count)`` after a load (the server exits after the last two);
  ``("spawned", pid)``, with the child's pidfd when the main process sent no exit pipe;
  ``("spawn_failed", text)``; ``("exit", pid, exitcode)`` once a child has exited and been reaped
  (``-N`` when killed by signal N).
* main → server: ``("load",)`` with a stream socket carrying the
  :class:`~horsies_worker.spawn.Bootstrap`: take on the main process's state and import the app
  (:func:`~horsies_worker.child_main.load_app`) for every child forked from now on; ``("spawn",)``
  with the child's end of its pipe, and without pidfds the write end of its exit pipe;
  ``("signal", pid, signum)``, for a child whose pidfd the main process lacks.

A server that was never asked to load forks children that import the app themselves. Importing
the app may start threads (a telemetry exporter, a client's keep-alive): the server then answers
``threaded`` and exits rather than fork, and the main process falls back to such a server.

End-of-file on the socket (the main process closed it or died) ends the server. The server dies
with the process that started it (``PR_SET_PDEATHSIG``), and each child with the server, so the
whole tree goes with the main process.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import pickle
import select
import signal
import socket
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any, NoReturn, cast

from horsies_worker.child_main import child_entry, init_error_text, load_app, take_on
from horsies_worker.footprint import release_free_memory, warm_up
from horsies_worker.parent_death import signal_when_parent_dies
from horsies_worker.spawn import PIDFDS, Bootstrap

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["name_process", "one_thread", "serve", "serve_fd"]

_MAX_MESSAGE = 4096
"""Every message of the protocol is a small tuple."""
_LOAD_READ_TIMEOUT_S = 30.0
"""The main process writes the bootstrap right after the ``load`` request."""


def name_process(name: bytes) -> None:
    """Set the process name ``ps -o comm`` and ``psutil.Process.name()`` show (Linux; best effort):
    forked processes keep the worker's command line, so the name tells them apart."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes  # prctl exists only on Linux

            ctypes.CDLL(None).prctl(15, name[:15], 0, 0, 0)  # PR_SET_NAME


def one_thread() -> bool:
    """True when this process runs a single thread: native ones counted where Linux tells
    (``/proc/self/task``), else the ones Python started."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def _send(control: socket.socket, message: tuple[Any, ...], fds: list[int] | None = None) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(control, [data], fds)
    else:
        control.send(data)


def _close_fds_from_outside(keep: int) -> None:
    """Close the descriptors this process inherited from whoever started the worker (those marked
    inheritable: Python makes its own close-on-exec), as ``subprocess`` does for a new
    interpreter, so no child holds them; stdin becomes ``/dev/null``."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux: nothing to go by
        return
    for fd in open_fds:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    os.close(fd)


def _exit_code(exc: SystemExit) -> int:
    """The status a new interpreter would exit with for ``exc``."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _finish_child(code: int) -> NoReturn:
    """End a child the way an interpreter ends: wait for its non-daemon threads, run its ``atexit``
    callbacks, flush its streams; then leave with ``os._exit`` so nothing returns into the server's
    frames (or, for a server forked from the main process, the main process's)."""
    with contextlib.suppress(BaseException):
        shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls at exit
        if callable(shutdown):
            shutdown()
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()  # pyright: ignore[reportPrivateUsage]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(code)


def _become_child(
    control: socket.socket,
    wakeup: tuple[int, int],
    fds: tuple[int, int],
    server_pid: int,
    app: Horsies | None,
) -> NoReturn:
    """Run a worker child in the process just forked: drop what only the server uses, then
    :func:`~horsies_worker.child_main.child_entry`."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the worker stops a busy child with it
        for fd in wakeup:
            os.close(fd)
        control.close()
        name_process(b"horsies-child")
        child_entry(fds[0], fds[1], server_pid, app)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
    _finish_child(code)


class _Server:
    """The server's state: its socket, the wake-up pipe of SIGCHLD and the children not yet
    reaped."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.pid = os.getpid()
        self.children: set[int] = set()
        self.app: Horsies | None = None
        """The app, once loaded: every child forked from then on has it."""
        self.wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # A handler, not SIG_IGN: an ignored SIGCHLD makes the kernel reap children itself, and
        # their exit statuses would be lost.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wakeup[1], warn_on_full_buffer=False)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(self.wakeup[0], select.POLLIN)
        _send(self.control, ("up", self.pid))
        while True:
            for fd, _ in poller.poll():
                if fd == self.wakeup[0]:
                    with contextlib.suppress(OSError):
                        while os.read(self.wakeup[0], 512):
                            pass
                    self._reap()
                elif not self._handle_request():
                    return

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            _send(self.control, ("exit", pid, os.waitstatus_to_exitcode(status)))

    def _handle_request(self) -> bool:
        """Serve one request; False at end-of-file, or when the server must end."""
        data, fds, _, _ = socket.recv_fds(self.control, _MAX_MESSAGE, 2)
        if not data:
            return False
        try:
            message: tuple[Any, ...] = pickle.loads(data)
            if message[0] == "load" and fds:
                return self._load(fds[0])
            if message[0] == "spawn" and fds:
                self._spawn(fds[0], fds[1] if len(fds) > 1 else -1)
            elif message[0] == "signal" and message[1] in self.children:
                # Still ours and not reaped, so the pid cannot belong to anyone else yet.
                with contextlib.suppress(OSError):
                    os.kill(message[1], message[2])
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return True

    def _load(self, fd: int) -> bool:
        """Take on the bootstrap read from ``fd`` and import the app; False when this server must
        end (the import failed, or left threads running)."""
        with socket.socket(fileno=os.dup(fd)) as stream:
            stream.settimeout(_LOAD_READ_TIMEOUT_S)
            data = b"".join(iter(lambda: stream.recv(1 << 16), b""))
        bootstrap = cast(Bootstrap, pickle.loads(data))
        take_on(bootstrap)
        try:
            app = load_app(bootstrap.init)
        except BaseException as exc:
            _send(self.control, ("load_error", init_error_text(exc)))
            return False
        if not one_thread():
            _send(self.control, ("threaded", threading.active_count()))
            return False
        warm_up(app)
        release_free_memory()
        self.app = app
        _send(self.control, ("loaded",))
        return True

    def _spawn(self, conn_fd: int, exit_fd: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # else the child would write out our buffered output again
        # Every object so far goes to the permanent generation: the child's collections never
        # visit (and so never write to) the pages it shares with this process.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError as exc:
            _send(self.control, ("spawn_failed", f"fork failed: {exc}"))
            return
        if pid == 0:
            _become_child(self.control, self.wakeup, (conn_fd, exit_fd), self.pid, self.app)
        self.children.add(pid)
        if exit_fd >= 0 or not PIDFDS:
            _send(self.control, ("spawned", pid))
            return
        # Opened here, by the parent, before this process can reap the child: the pid cannot have
        # been reused by another process yet.
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            _send(self.control, ("spawned", pid))  # the main process stops it: it has no sentinel
            return
        try:
            _send(self.control, ("spawned", pid), [pidfd])
        finally:
            os.close(pidfd)


def serve(control: socket.socket, parent_pid: int) -> NoReturn:
    """Run the fork server on ``control`` until end-of-file, then exit (never returns).

    ``parent_pid`` is the process that started it (the worker main process): the server dies with
    it, and exits at once if it is already gone.
    """
    code = 0
    try:
        # Ctrl+C, or a SIGTERM sent to the whole process group (a service manager, a terminal),
        # is the main process's to handle: it stops the children, then this server. The server
        # dies with the main process in any case.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not signal_when_parent_dies(signal.SIGKILL, parent_pid):
            os._exit(1)
        name_process(b"horsies-fork")
        _close_fds_from_outside(control.fileno())
        _Server(control).run()
    except ConnectionError:
        pass  # the main process is gone (it exited before reading what the server sent)
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)


def serve_fd(fd: int, parent_pid: int) -> NoReturn:
    """Entry point of a fork server started as a new interpreter, with its end of the socket pair
    at descriptor ``fd``."""
    control = socket.socket(fileno=fd)
    control.set_inheritable(False)
    serve(control, parent_pid)
