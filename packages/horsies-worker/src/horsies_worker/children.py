"""Children: the worker's persistent child processes, seen from the main process.

Each :class:`ChildProcess` is a process running :func:`horsies_worker.child_main.child_main`,
forked by the pool's fork server (:mod:`horsies_worker.fork_server`), connected by one duplex pipe.
The main process never blocks on a child: the pipe and the process sentinel are registered with
the event loop (``loop.add_reader``), so a result or a death is seen the moment it happens.
:class:`ChildPool` keeps ``processes`` children alive, hands out idle ones, and replaces a dead one,
so a crashing task costs a child, never the worker.

A child runs one task at a time, in the order it received them, or several ``async def`` tasks at
once on its event loop (``Assignment.concurrent``: written at once, finishing in any order); the
worker may queue a few more behind the running one (prefetch mode, short tasks: see
``WorkerState.child_depth``), so the child never waits for a database round trip between two of
them. ``ChildProcess.assignments`` is that
queue: its head is running (or about to); the rest are held here, each written to the pipe the
moment the one before it returns, so the worker can still take them back (see
:data:`QUEUE_WAIT_MAX_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from horsies.logs import get_logger

from horsies_worker.execution import sent_at_micros
from horsies_worker.fork_server import ForkServer, ForkServerError, PoolForkServer, SpawnedChild
from horsies_worker.spawn import ChildInit

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from horsies.broker.claims import ClaimedTask

logger = get_logger("worker")

_RESPAWN_BACKOFF_MIN_S = 0.5
_RESPAWN_BACKOFF_MAX_S = 30.0
BLOCKED_LOOP_GRACE_S = 5.0
"""How long past its time limit an async task may still be running before the worker stops its
child: the child cancels it at the limit itself, unless the task blocks the child's loop."""
QUEUE_WAIT_MAX_S = 0.01
"""Tasks queued behind a running one are taken back (and requeued) once it has run this long, and
none queue behind it any more. A queued task's row is RUNNING although its code has not begun:
if the whole worker dies meanwhile, a reaper fails it as crashed. This bounds that window."""


class ChildStartError(RuntimeError):
    """A child process failed to initialise (import error in the app or a task module, …)."""


class ChildState(Enum):
    """Lifecycle of one child process."""

    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"


@dataclass(slots=True)
class Assignment:
    """A task given to a child: reserved before it is started, ``sent`` once the child owns it
    (``written`` once its message is on the pipe, which waits until the child is free)."""

    task: ClaimedTask
    concurrent: bool = False
    """An ``async def`` task: runs beside the child's other async tasks, so it is written to the
    pipe at once rather than held behind them."""
    time_limit_s: float | None = None
    """The task's time limit: once written to the pipe, a sync task's child is stopped when it
    passes; an async task is cancelled by its child, and its child stopped only if it has not
    answered :data:`BLOCKED_LOOP_GRACE_S` later."""
    sent: bool = False
    written: bool = False
    started_monotonic: float = 0.0
    timed_out: bool = False
    """Its child was stopped because the task ran past its time limit."""
    stopped: bool = False
    """Its stop was requested (``cancel()`` of a running task) and carried out."""
    deadline: asyncio.TimerHandle | None = None


ResultCallback = Callable[["ChildProcess", Assignment, str, bool], None]
"""Called with (child, assignment, result_json, ok) when a child returns a result."""
ExitCallback = Callable[["ChildProcess", "Sequence[Assignment]", "int | None"], None]
"""Called with (child, its assignments in order — the first sent one was running —, exit code) when
a child dies."""
StartCallback = Callable[["ClaimedTask"], None]
"""Called with a task whose message was just written to a child's pipe: its code begins."""


@dataclass(eq=False)
class ChildProcess:
    """One persistent child process and its pipe.

    Ownership: all attributes are written on the event-loop thread only (reader callbacks run
    there).
    """

    index: int
    init: ChildInit
    _: KW_ONLY
    on_result: ResultCallback
    on_exit: ExitCallback
    on_start: StartCallback | None = None
    state: ChildState = field(init=False, default=ChildState.STARTING)
    assignments: deque[Assignment] = field(init=False, default_factory=deque[Assignment])
    exitcode: int | None = field(init=False, default=None)
    _loop: asyncio.AbstractEventLoop | None = field(init=False, default=None)
    _conn: Connection | None = field(init=False, default=None)
    _process: SpawnedChild | None = field(init=False, default=None)
    _ready: asyncio.Future[int] | None = field(init=False, default=None)
    _expect_exit: bool = field(init=False, default=False)

    # -- properties --------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The child's pid (0 before it was started)."""
        return 0 if self._process is None else self._process.pid

    @property
    def assignment(self) -> Assignment | None:
        """The task the child runs now (or will run next), if any."""
        return self.assignments[0] if self.assignments else None

    @property
    def idle(self) -> bool:
        """True when the child is ready and has no task assigned."""
        return self.state is ChildState.READY and not self.assignments

    def async_free_slots(self, concurrency: int) -> int:
        """How many more async tasks the child may run beside the async tasks it runs now (0 when
        it runs none, or runs a sync task: an idle child takes any task first)."""
        if self.state is not ChildState.READY or not self.assignments or not self._runs_async:
            return 0
        return max(0, concurrency - len(self.assignments))

    @property
    def _runs_async(self) -> bool:
        """Every task the child holds is an async one (or it holds none)."""
        return all(a.concurrent for a in self.assignments)

    def free_slots(self, depth: int) -> int:
        """How many more tasks the child may hold with ``depth`` at most (0 unless ready, and 0
        behind a task running longer than :data:`QUEUE_WAIT_MAX_S`)."""
        if self.state is not ChildState.READY:
            return 0
        if self.head_overdue(time.monotonic()):
            return 0
        return max(0, depth - len(self.assignments))

    def head_overdue(self, now: float) -> bool:
        """True when the running task has run longer than :data:`QUEUE_WAIT_MAX_S`."""
        head = self.assignment
        return head is not None and head.written and now - head.started_monotonic > QUEUE_WAIT_MAX_S

    def queued(self) -> list[Assignment]:
        """The tasks queued behind the running one: sent, held here, not yet written."""
        return [a for a in self.assignments if a.sent and not a.written]

    def take_back_queued(self) -> list[Assignment]:
        """Remove and return :meth:`queued`."""
        queued = self.queued()
        for assignment in queued:
            self.assignments.remove(assignment)
        return queued

    def reserve(self, assignment: Assignment) -> None:
        """Queue ``assignment`` for this child before it is sent (no other pass can take it)."""
        self.assignments.append(assignment)

    def unreserve(self, assignment: Assignment) -> bool:
        """Take back a reserved assignment; False if the child no longer holds it (it died)."""
        try:
            self.assignments.remove(assignment)
        except ValueError:
            return False
        self._write_waiting()  # a held task may have moved to the head
        return True

    def holds(self, assignment: Assignment) -> bool:
        """True while ``assignment`` is queued on (or running in) this child."""
        return any(a is assignment for a in self.assignments)

    @property
    def alive(self) -> bool:
        """True until the child's death has been observed."""
        return self.state is not ChildState.DEAD

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, server: ForkServer) -> asyncio.Future[int]:
        """Have ``server`` fork the process and return a future resolved with its pid once it
        reports readiness.

        The future fails with :class:`ChildStartError` if the child reports an initialisation
        error or dies before becoming ready; :class:`ChildStartError` is raised at once if the
        server could not fork it.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ready = loop.create_future()
        try:
            process, parent_conn = server.spawn(self.init)
        except ForkServerError as exc:
            self.state = ChildState.DEAD
            raise ChildStartError(str(exc)) from exc
        self._conn = parent_conn
        self._process = process
        loop.add_reader(parent_conn.fileno(), self._on_readable)
        loop.add_reader(process.sentinel, self._on_sentinel)
        return self._ready

    def send_tasks(self, batch: Sequence[Assignment]) -> bool:
        """Give ``batch`` (reserved on this child, in order) to the child; False if the child is
        gone (then none of them was given).

        A task's message goes on the pipe at once when the child is free, and the async tasks of
        a child running async tasks go together in one message; behind a running task a message
        is held here and written the moment the child gets to it (the worker may still take it
        back, and the pipe never fills up while the child itself waits to write a result).
        """
        if self._conn is None or self.state is not ChildState.READY:
            return False
        runs_async = self._runs_async
        now: list[Assignment] = []
        for assignment in batch:
            assignment.sent = True
            if self.assignment is assignment or (assignment.concurrent and runs_async):
                now.append(assignment)
        return not now or self._write(now)

    @staticmethod
    def _message(assignment: Assignment) -> tuple[Any, ...]:
        task = assignment.task
        sent_at = sent_at_micros(task.sent_at)
        run = (task.id, task.queue_name, task.priority, task.retry_count, task.max_retries,
               sent_at, assignment.time_limit_s, task.task_options)  # fmt: skip
        return ("run", task.id, task.task_name, task.args, task.kwargs, run)

    def _write(self, assignments: Sequence[Assignment]) -> bool:
        """Write the messages of ``assignments`` in one write: several only when all are async
        tasks (a ``runs`` message, which only a child serving async tasks reads)."""
        if self._conn is None:
            return False
        if len(assignments) == 1:
            message = self._message(assignments[0])
        else:
            message = ("runs", [self._message(a) for a in assignments])
        try:
            # pickle.dumps + send_bytes is what Connection.send does, minus building a
            # ForkingPickler (with its reducer table) per message; recv() reads it the same way.
            self._conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            return False
        for assignment in assignments:
            self._written(assignment)
        return True

    def _written(self, assignment: Assignment) -> None:
        assignment.written = True
        assignment.started_monotonic = time.monotonic()
        if self.on_start is not None:
            self.on_start(assignment.task)
        limit = assignment.time_limit_s
        if limit is not None and self._loop is not None:
            # An async task is cancelled by its child at the limit; the worker steps in only if
            # the child's loop did not answer in time (a task blocking it without awaiting).
            if assignment.concurrent:
                limit += BLOCKED_LOOP_GRACE_S
            assignment.deadline = self._loop.call_later(limit, self._over_time, assignment)

    def cancel_task(self, assignment: Assignment) -> None:
        """Ask the child to cancel one of its async tasks (it answers with the task's result)."""
        if self._conn is not None and self.state is ChildState.READY:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send_bytes(
                    pickle.dumps(("cancel", assignment.task.id), pickle.HIGHEST_PROTOCOL)
                )

    def _over_time(self, assignment: Assignment) -> None:
        """A task passed its time limit (an async one: and its child did not stop it): stop its
        child (the worker records the timeout when it sees the child exit, and a fresh child takes
        its place; the child's other tasks end as crashed)."""
        if self.holds(assignment) and self.state is not ChildState.DEAD:
            assignment.timed_out = True
            self.kill()

    def _write_waiting(self) -> None:
        """Write the next held message once the child is free (the head of the queue)."""
        head = self.assignment
        if head is None or not head.sent or head.written:
            return
        self._write([head])  # a dead child's sentinel reports the rest

    @property
    def running(self) -> bool:
        """True while a task given to the child has not returned."""
        return bool(self.assignments) and self.assignments[0].sent

    def request_stop(self) -> None:
        """Ask an idle child to exit after its current message (graceful)."""
        self._expect_exit = True
        if self._conn is not None and self.state is not ChildState.DEAD:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("stop",))

    def terminate(self) -> None:
        """Send SIGTERM to the child (it will be reported through the exit callback)."""
        self._expect_exit = True
        if self._process is not None and self.state is not ChildState.DEAD:
            with contextlib.suppress(Exception):
                self._process.terminate()

    def kill(self) -> None:
        """Send SIGKILL to the child."""
        self._expect_exit = True
        if self._process is not None and self.state is not ChildState.DEAD:
            with contextlib.suppress(Exception):
                self._process.kill()

    @property
    def expected_exit(self) -> bool:
        """True if the worker asked this child to stop (stop, terminate or kill)."""
        return self._expect_exit

    # -- event-loop callbacks ----------------------------------------------------------------------

    def _on_readable(self) -> None:
        # One message per callback: the pipe is readable, so a message (or EOF) is waiting, and the
        # loop's level-triggered reader calls us again while more are buffered. Connection.poll()
        # before each recv() would cost a select() (and a new selector object) per message.
        conn = self._conn
        if conn is None:
            return
        try:
            message: tuple[Any, ...] = conn.recv()
        except (EOFError, OSError):
            # The child is gone; stop watching the pipe (EOF stays readable). The sentinel
            # callback reports the death.
            self._remove_pipe_reader()
            return
        self._handle_message(message)

    def _drain_pipe(self) -> None:
        """Handle every message already in the pipe (called once the child has exited)."""
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                message: tuple[Any, ...] = conn.recv()
                self._handle_message(message)
        except (EOFError, OSError):
            pass

    def _handle_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            self.state = ChildState.READY
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(int(message[1]))
        elif kind == "init_error":
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(ChildStartError(str(message[1])))
        elif kind == "result":
            self._on_result(*message[1:])
        elif kind == "results":
            for reply in message[1]:
                self._on_result(*reply)

    def _on_result(self, task_id: str, result_json: str, ok: bool) -> None:
        # The running task is the head, or, for async tasks, any written one: they finish in any
        # order.
        assignment = next((a for a in self.assignments if a.written and a.task.id == task_id), None)
        if assignment is None:
            logger.error("child_unexpected_result: child %s sent %r", self.pid, task_id)
            return
        self.assignments.remove(assignment)
        if assignment.deadline is not None:
            assignment.deadline.cancel()
        self._write_waiting()
        self.on_result(self, assignment, str(result_json), bool(ok))

    def _remove_pipe_reader(self) -> None:
        if self._loop is not None and self._conn is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._conn.fileno())

    def _on_sentinel(self) -> None:
        # Deliver anything the child wrote before dying (a result that raced its exit).
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._drain_pipe()
        loop = self._loop
        if loop is not None and self._process is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self._process.sentinel)
        self._remove_pipe_reader()
        if self._process is not None:
            self._process.join(timeout=1.0)
            self.exitcode = self._process.exitcode
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        if self._process is not None:
            with contextlib.suppress(Exception):
                self._process.close()
        self.state = ChildState.DEAD
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                ChildStartError(f"child process exited with code {self.exitcode} before ready")
            )
        assignments = list(self.assignments)
        self.assignments.clear()
        for assignment in assignments:
            if assignment.deadline is not None:
                assignment.deadline.cancel()
        self.on_exit(self, assignments, self.exitcode)


@dataclass(eq=False)
class ChildPool:
    """Keeps ``size`` persistent children running and replaces dead ones.

    ``on_result``, ``on_exit`` and ``on_start`` are forwarded from the children; ``on_ready`` is
    called whenever a (re)spawned child becomes ready, so the worker can dispatch to it.
    """

    size: int
    init: ChildInit
    _: KW_ONLY
    on_result: ResultCallback
    on_exit: ExitCallback
    on_ready: Callable[[ChildProcess], None]
    on_start: StartCallback | None = None
    children: list[ChildProcess] = field(init=False, default_factory=list[ChildProcess])
    _closed: bool = field(init=False, default=False)
    _respawn: bool = field(init=False, default=True)
    _respawn_tasks: set[asyncio.Task[None]] = field(
        init=False, default_factory=set[asyncio.Task[None]]
    )
    _backoff: float = field(init=False, default=_RESPAWN_BACKOFF_MIN_S)
    _server: PoolForkServer = field(init=False, default_factory=PoolForkServer)

    def _new_child(self, index: int) -> ChildProcess:
        return ChildProcess(
            index,
            self.init,
            on_result=self.on_result,
            on_exit=self._child_exit,
            on_start=self.on_start,
        )

    async def _live_server(self) -> ForkServer:
        """The pool's fork server, ready to fork (:class:`PoolForkServer`); raises
        :class:`ChildStartError` if it could not be made ready. The caller bounds the wait."""
        try:
            return await self._server.ready(self.init)
        except ForkServerError as exc:
            raise ChildStartError(str(exc)) from exc

    async def start(self) -> None:
        """Start all children in parallel and wait until each reports readiness.

        Raises :class:`ChildStartError` (after stopping the others) if any child fails to start.
        The caller bounds the wait (start-up timeout).
        """
        server = await self._live_server()
        self.children = [self._new_child(i) for i in range(self.size)]
        futures: list[asyncio.Future[int]] = []
        try:
            futures.extend(child.start(server) for child in self.children)
            await asyncio.gather(*futures)
        except BaseException:
            for child in self.children:
                child.kill()
            for fut in futures:
                if fut.done() and not fut.cancelled():
                    fut.exception()
            raise
        for child in self.children:
            logger.debug("child_ready: index=%s pid=%s", child.index, child.pid)

    def idle_children(self) -> list[ChildProcess]:
        """Children ready for a task right now."""
        return [c for c in self.children if c.idle]

    def assignments(self) -> list[tuple[ChildProcess, Assignment]]:
        """Current (child, assignment) pairs, reserved and queued ones included."""
        return [(c, a) for c in self.children for a in c.assignments]

    def _child_exit(
        self, child: ChildProcess, assignments: Sequence[Assignment], exitcode: int | None
    ) -> None:
        self.on_exit(child, assignments, exitcode)
        if not self._closed and self._respawn:
            task = asyncio.get_running_loop().create_task(self._respawn_child(child.index))
            self._respawn_tasks.add(task)
            task.add_done_callback(self._respawn_tasks.discard)

    def stop_respawning(self) -> None:
        """Do not replace children that die from now on (the worker is shutting down)."""
        self._respawn = False

    async def _respawn_child(self, index: int) -> None:
        """Replace the dead child at ``index``; retries with backoff if the new child fails."""
        while not self._closed and self._respawn:
            try:
                server = await asyncio.wait_for(self._live_server(), timeout=60.0)
                child = self._new_child(index)
                self.children[index] = child
                pid = await asyncio.wait_for(child.start(server), timeout=60.0)
            except (ChildStartError, TimeoutError) as exc:
                self.children[index].kill()
                logger.error("child_respawn_failed: index=%s error=%s", index, exc)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, _RESPAWN_BACKOFF_MAX_S)
                continue
            if self._closed:
                child.request_stop()
                return
            self._backoff = _RESPAWN_BACKOFF_MIN_S
            logger.info("child_respawned: index=%s pid=%s", index, pid)
            self.on_ready(child)
            return

    async def wait_until_idle(self, timeout: float, interrupt: asyncio.Event | None = None) -> bool:
        """Wait until no child has a sent assignment, at most ``timeout`` seconds.

        Returns True when idle; False on timeout or when ``interrupt`` is set.
        """
        deadline = time.monotonic() + timeout
        while any(c.running for c in self.children):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (interrupt is not None and interrupt.is_set()):
                return False
            await asyncio.sleep(min(0.05, remaining))
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every child: busy ones are terminated, idle ones asked to exit; bounded wait.

        Children still running a task are reported through ``on_exit`` with their assignment, so
        the worker can record the outcome.
        """
        self._closed = True
        for task in list(self._respawn_tasks):
            task.cancel()
        for task in list(self._respawn_tasks):
            with contextlib.suppress(BaseException):
                await task
        for child in self.children:
            if child.running or child.state is ChildState.STARTING:
                child.terminate()
            else:
                child.request_stop()
        deadline = time.monotonic() + timeout
        while any(c.alive for c in self.children) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for child in self.children:
            if child.alive:
                child.kill()
        deadline = time.monotonic() + 2.0
        while any(c.alive for c in self.children) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for child in self.children:
            if child.alive:
                # Never observed dead (should not happen after SIGKILL); do not wait forever.
                logger.warning("child_not_reaped: pid=%s", child.pid)
        self._server.close()
