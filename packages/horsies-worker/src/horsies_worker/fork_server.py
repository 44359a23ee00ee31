"""Starting worker children: the main process's side of the fork server.

Every child is forked by a fork server (:mod:`horsies_worker.fork_server_main`, which says why),
reached through a :class:`ForkServer`. ``horsies worker`` forks the server from its main process
at start-up (:func:`prepare_fork_server`), before the main process imports the database driver
and the app, starts a thread or an event loop, so the interpreter, pydantic, horsies and asyncio
(imported by this module: the main process needs it, and so does a child for its first async task)
are in memory once for the whole tree. Where that is not possible (``run_worker`` called from a
script, a pool built by a test, a process that already runs threads) the server is a new
interpreter (:meth:`ForkServer.start_new`), whose pages its children share.

A forked child is not a child of the main process, so the main process learns its exit status from
the server (``("exit", pid, exitcode)``) and signals it through its pidfd, or without pidfds
through the server, which is its parent: in both cases a pid that was reused by another process is
never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Final, cast

from horsies.logs import get_logger

from horsies_worker.fork_server_main import one_thread, serve
from horsies_worker.spawn import PIDFDS, Bootstrap, ChildInit, child_environment

__all__ = [
    "ForkServer",
    "ForkServerError",
    "PoolForkServer",
    "SpawnedChild",
    "prepare_fork_server",
]

logger = get_logger("worker")

_MAX_MESSAGE = 4096
_SPAWN_TIMEOUT_S: Final = 30.0
"""A fork takes milliseconds; this only bounds a server that stopped answering."""
_CLOSE_TIMEOUT_S: Final = 5.0


class ForkServerError(RuntimeError):
    """The fork server is gone or could not start a child."""


def _interpreter_flags() -> list[str]:
    """This interpreter's command-line flags (``-B``, ``-X ...``, ``-W ...``, ...), as spawn passes
    them on (the stdlib helper ``multiprocessing`` uses; not in the type stubs)."""
    helper = getattr(subprocess, "_args_from_interpreter_flags")  # noqa: B009
    flags = cast("Callable[[], list[str]]", helper)
    return flags()


class ForkServer:
    """The main process's handle on a fork server: starts children, reports their exit statuses,
    signals them, and stops the server.

    Used from one thread at a time (the worker's event loop); a lock keeps the socket's request
    and reply together regardless.
    """

    def __init__(
        self, control: socket.socket, pid: int, process: subprocess.Popen[bytes] | None
    ) -> None:
        self._control = control
        self._pid = pid
        self._process = process
        """The new interpreter running the server; None when it was forked from this process."""
        self._lock = threading.Lock()
        self._poller = select.poll()
        self._poller.register(control, select.POLLIN)
        self._up = False
        self._loaded = False
        self._gone = False
        self._closed = False
        self._reply: tuple[tuple[Any, ...], list[int]] | None = None
        self._exits: dict[int, int] = {}

    @classmethod
    def fork_from_here(cls) -> ForkServer | None:
        """Fork the server from this process, or None where that is not safe: not Linux, more
        than one thread, a running event loop, or the database driver already imported (children
        load it only when a task sends).

        Every object of this process is frozen first (``gc.freeze()``), so neither process's
        collector writes to the pages they share.
        """
        if not sys.platform.startswith("linux") or not one_thread() or "psycopg" in sys.modules:
            return None
        with contextlib.suppress(RuntimeError):  # raised when no loop runs: the case wanted
            asyncio.get_running_loop()
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # else the server's children would write it out again
        gc.freeze()
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            serve(theirs, parent_pid)
        theirs.close()
        return cls(ours, pid, None)

    @classmethod
    def start_new(cls) -> ForkServer:
        """Start the server as a new interpreter (same executable and interpreter flags), in this
        process's process group, with stdin on ``/dev/null`` and this process's stdout and
        stderr."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = [
                sys.executable,
                *_interpreter_flags(),
                "-c",
                "from horsies_worker.fork_server_main import serve_fd; "
                f"serve_fd({theirs.fileno()}, {os.getpid()})",
            ]
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=child_environment(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(ours, process.pid, process)

    # -- the socket ------------------------------------------------------------------------------

    def _read(self, timeout_s: float) -> bool:
        """Read one message if one comes within ``timeout_s``; False if none did. A reply is kept
        for the request waiting on it; end-of-file marks the server gone."""
        if self._gone:
            return False
        if not self._poller.poll(max(0, int(timeout_s * 1000))):
            return False
        try:
            data, fds, _, _ = socket.recv_fds(self._control, _MAX_MESSAGE, 1)
        except OSError:
            data, fds = b"", []
        if not data:
            self._gone = True
            return False
        message = cast("tuple[Any, ...]", pickle.loads(data))
        kind = message[0]
        if kind == "up":
            self._up = True
        elif kind == "exit":
            self._exits[int(message[1])] = int(message[2])
        else:
            self._reply = (message, fds)
            return True
        for fd in fds:
            os.close(fd)
        return True

    def _read_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._gone:
                return done()
            self._read(remaining)
        return True

    # -- for the pool ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the server was closed or has gone away (checked without waiting)."""
        with self._lock:
            while self._read(0):
                pass
            return not (self._gone or self._closed)

    async def _until(self, done: Callable[[], bool]) -> None:
        """Read the server's messages from the event loop until ``done()``; the caller bounds
        the wait. Raises :class:`ForkServerError` if the server ends first."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            with self._lock:
                while self._read(0):
                    pass
            if finished.done():
                return
            if done():
                finished.set_result(None)
            elif self._gone:
                finished.set_exception(ForkServerError("the fork server exited"))

        loop.add_reader(self._control.fileno(), readable)
        try:
            readable()
            await finished
        finally:
            loop.remove_reader(self._control.fileno())

    async def wait_up(self) -> None:
        """Wait until the server is ready to fork (a new interpreter first imports horsies); the
        caller bounds the wait. Raises :class:`ForkServerError` if it ends instead."""
        await self._until(lambda: self._up)

    async def load(self, init: ChildInit) -> bool:
        """Have the server import the app for every child it forks from now on, after taking on
        this process's ``sys.path``, ``sys.argv``, environment and working directory (as a child
        started now would); the caller bounds the wait.

        Returns False, and the server ends, if importing the app left threads running in it: it
        must not fork then. Raises :class:`ForkServerError` if the import failed (with the error's
        text) or the server is gone.
        """
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                self._reply = None
                try:
                    socket.send_fds(self._control, [pickle.dumps(("load",))], [theirs.fileno()])
                except OSError as exc:
                    self._gone = True
                    raise ForkServerError(f"the fork server is gone: {exc}") from exc
            # The bootstrap, then end-of-file: it may not fit the control socket's messages.
            ours.settimeout(_SPAWN_TIMEOUT_S)
            with contextlib.suppress(OSError):  # the server is gone: the reply says so
                ours.sendall(pickle.dumps(_bootstrap(init), pickle.HIGHEST_PROTOCOL))
        finally:
            theirs.close()
            ours.close()
        await self._until(lambda: self._reply is not None)
        message, _ = cast("tuple[tuple[Any, ...], list[int]]", self._reply)
        self._reply = None
        if message[0] == "load_error":
            raise ForkServerError(str(message[1]))
        self._loaded = message[0] == "loaded"
        return self._loaded

    def spawn(self, init: ChildInit) -> tuple[SpawnedChild, Connection]:
        """Start a child running ``child_main.child_entry``; return it and the parent's end of its
        pipe. Unless the server has loaded the app, the child imports it itself: its
        :class:`~horsies_worker.spawn.Bootstrap` is then already sent.

        Raises :class:`ForkServerError` if the server is gone or could not fork.
        """
        parent_sock, child_sock = socket.socketpair()
        exit_r, exit_w = (-1, -1) if PIDFDS else os.pipe()
        passed = [child_sock.fileno()] if PIDFDS else [child_sock.fileno(), exit_w]
        try:
            with self._lock:
                message, fds = self._request(passed)
        except BaseException:
            parent_sock.close()
            if exit_r >= 0:
                os.close(exit_r)
            raise
        finally:
            # Our copies of the child's ends must go: EOF and the sentinel depend on it.
            child_sock.close()
            if exit_w >= 0:
                os.close(exit_w)
        pid = int(message[1])
        sentinel = fds[0] if PIDFDS else exit_r
        child = SpawnedChild(self, pid, sentinel, pidfd=PIDFDS)
        conn = Connection(parent_sock.detach())
        if not self._loaded:
            with contextlib.suppress(OSError):
                # A child that died at once: its sentinel reports it.
                conn.send_bytes(pickle.dumps(_bootstrap(init), pickle.HIGHEST_PROTOCOL))
        return child, conn

    def _request(self, fds: list[int]) -> tuple[tuple[Any, ...], list[int]]:
        """Ask for a child (caller holds the lock); the ``spawned`` reply and its descriptors."""
        if self._gone or self._closed:
            raise ForkServerError("the fork server is gone")
        self._reply = None
        try:
            socket.send_fds(self._control, [pickle.dumps(("spawn",))], fds)
        except OSError as exc:
            self._gone = True
            raise ForkServerError(f"the fork server is gone: {exc}") from exc
        if not self._read_until(lambda: self._reply is not None, _SPAWN_TIMEOUT_S):
            raise ForkServerError("the fork server did not answer")
        message, received = cast("tuple[tuple[Any, ...], list[int]]", self._reply)
        self._reply = None
        if message[0] != "spawned":
            for fd in received:
                os.close(fd)
            raise ForkServerError(str(message[1]))
        if PIDFDS and not received:
            self._signal(int(message[1]), signal.SIGKILL)
            raise ForkServerError("the fork server could not open the child's pidfd")
        return message, received

    def exit_code(self, pid: int, timeout_s: float) -> int | None:
        """Exit status of child ``pid`` (``-N`` when killed by signal N), waiting at most
        ``timeout_s`` seconds for the server to report it; None if it has not (yet)."""
        with self._lock:
            self._read_until(lambda: pid in self._exits, timeout_s)
            return self._exits.pop(pid, None)

    def signal(self, pid: int, signum: int) -> None:
        """Have the server send ``signum`` to its child ``pid`` (a no-op once it was reaped)."""
        with self._lock:
            self._signal(pid, signum)

    def _signal(self, pid: int, signum: int) -> None:
        with contextlib.suppress(OSError):
            self._control.send(pickle.dumps(("signal", pid, signum)))

    def close(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Stop the server (its children, if any are left, die with it) and reap it, waiting at
        most ``timeout_s`` seconds before killing it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self._control.shutdown(socket.SHUT_WR)
            # The server exits on end-of-file; its end closing is ours.
            self._read_until(lambda: self._gone, timeout_s)
            self._control.close()
        if self._process is not None:
            try:
                self._process.wait(timeout_s if self._gone else 0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout_s)
            return
        if not self._gone:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)


def _bootstrap(init: ChildInit) -> Bootstrap:
    """What a child started now needs to import the app as this process would."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # deleted: the child keeps the server's
        cwd = None
    return Bootstrap(
        init=init,
        sys_path=list(sys.path),
        sys_argv=list(sys.argv),
        environ=child_environment(),
        cwd=cwd,
    )


class SpawnedChild:
    """A running child process: pid, sentinel and exit status, like ``multiprocessing.Process``.

    ``sentinel`` (a pidfd, or the read end of the exit pipe) becomes readable when the child has
    exited or been killed. ``exitcode`` is None until the server has reported the child's exit,
    then its exit status (``-N`` when killed by signal N).
    """

    def __init__(self, server: ForkServer, pid: int, sentinel: int, *, pidfd: bool) -> None:
        self._server = server
        self._pid = pid
        self._sentinel = sentinel
        self._pidfd = pidfd
        self._exitcode: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def sentinel(self) -> int:
        return self._sentinel

    @property
    def exitcode(self) -> int | None:
        if self._exitcode is None:
            self._exitcode = self._server.exit_code(self._pid, 0)
        return self._exitcode

    def join(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds) for the server to report the child's exit."""
        if self._exitcode is None:
            wait = _SPAWN_TIMEOUT_S if timeout is None else timeout
            self._exitcode = self._server.exit_code(self._pid, wait)

    def terminate(self) -> None:
        """SIGTERM (a no-op once the child's exit was reported)."""
        self._send(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL (a no-op once the child's exit was reported)."""
        self._send(signal.SIGKILL)

    def _send(self, signum: int) -> None:
        if self._exitcode is not None:
            return
        if self._pidfd and self._sentinel >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._sentinel, signum)
            return
        self._server.signal(self._pid, signum)

    def close(self) -> None:
        """Close the sentinel (once the child's exit has been handled)."""
        if self._sentinel >= 0:
            os.close(self._sentinel)
            self._sentinel = -1


_prepared: ForkServer | None = None


def prepare_fork_server() -> None:
    """Fork the fork server from this process now, if it is safe (see
    :meth:`ForkServer.fork_from_here`), for the worker this process will run: its children then
    share this process's pages. Called by ``horsies worker`` before it imports the app."""
    global _prepared
    if _prepared is None:
        _prepared = ForkServer.fork_from_here()


def _take_prepared() -> ForkServer:
    """The server prepared by :func:`prepare_fork_server` (once: the taker owns it from then on),
    else a new interpreter."""
    global _prepared
    server, _prepared = _prepared, None
    if server is not None and server.alive:
        return server
    if server is not None:
        server.close()
    return ForkServer.start_new()


class PoolForkServer:
    """The fork server of one child pool: the prepared one at first, a new interpreter in place of
    one that has gone away (the pool's process runs an event loop: it may not fork any more), and
    one whose children import the app themselves once importing it in the server started
    threads."""

    def __init__(self) -> None:
        self._server: ForkServer | None = None
        self._preload = True
        self._starting = asyncio.Lock()

    async def ready(self, init: ChildInit) -> ForkServer:
        """The server, alive and, unless importing the app starts threads, with the app of
        ``init`` imported; the caller bounds the wait. Raises :class:`ForkServerError` if the
        server ended while starting or importing the app failed in it."""
        async with self._starting:  # children replaced together share one new server
            server = self._server
            if server is not None and server.alive:
                return server
            if server is not None:
                logger.warning("fork_server_gone: starting a new one")
                server.close()
            server = self._server = _take_prepared()
            try:
                await server.wait_up()
                if self._preload and not await server.load(init):
                    logger.warning(
                        "fork_server_threaded: importing the app started threads, and a process "
                        "with threads must not fork; each child imports the app itself"
                    )
                    self._preload = False
                    server.close()
                    server = self._server = ForkServer.start_new()
                    await server.wait_up()
            except BaseException:
                self._server = None
                server.close()
                raise
            return server

    def close(self) -> None:
        """Stop the server, if one was started."""
        if self._server is not None:
            self._server.close()
            self._server = None
