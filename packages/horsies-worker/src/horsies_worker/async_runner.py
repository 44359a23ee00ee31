"""Running ``async def`` tasks in a worker child, several at once, on one event loop.

A child serves its pipe one message at a time (``child_main``). On its first ``async def`` task it
hands over to :func:`serve_async` for the rest of its life: from then on its event loop reads the
pipe, so each async task the worker sends starts at once beside the others, and each result is
written back the moment its task ends (in any order: the worker matches results by task id). A
``def`` task runs alone, the loop waiting, as soon as no async task runs; the worker never sends
one to a child that runs async tasks (one that came would wait for them).

One task's exception or cancellation is its own result; only the death of the process takes its
neighbours down, and the worker then handles every task the child was running as crashed. A
``("cancel", task_id)`` message from the worker (a stop of a running task was requested) cancels
that one task at its next await; it ends ``TASK_CANCELLED``.

This module is imported on a child's first async task, so a child that never runs one never
loads asyncio.
"""

from __future__ import annotations

import asyncio
import functools
import pickle
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from horsies.tasks.execution import run_task_coroutine, run_task_function

from horsies_worker import run_spans
from horsies_worker.execution import (
    RunFacts,
    escaped_result,
    execute_task,
    execution_steps,
    stopped_result_json,
    timed_out_result_json,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from horsies.app import Horsies

__all__ = ["child_loop", "execute_task_async", "serve_async"]


@functools.cache
def child_loop() -> asyncio.AbstractEventLoop:
    """The child's one event loop, made for its first ``async def`` task and kept for the
    child's life, so what a task leaves on it (a client's connection pool) serves the next."""
    return asyncio.new_event_loop()


async def execute_task_async(
    app: Horsies,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    run: RunFacts | None = None,
) -> tuple[str, bool]:
    """``execute_task`` on the running loop: the same steps and outcomes (and span), the task
    awaited and cancelled at its time limit (``TASK_TIMEOUT``). A cancellation of the caller
    propagates (the span ends as the run's stop, ``TASK_CANCELLED``)."""
    span = run_spans.start(task_name, run)
    if span is None or run is None:
        return await _execute_async(app, task_name, args_json, kwargs_json, run)
    try:
        outcome = await _execute_async(app, task_name, args_json, kwargs_json, run)
    except asyncio.CancelledError:
        run_spans.end(span, run, stopped_result_json(task_name), False, final=True)
        raise
    run_spans.end(span, run, *outcome)
    return outcome


async def _execute_async(
    app: Horsies,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    run: RunFacts | None,
) -> tuple[str, bool]:
    steps = execution_steps(app, task_name, args_json, kwargs_json, run)
    try:
        task_fn, args, kwargs = next(steps)
        limit = None if run is None else run.time_limit_s
        if not task_fn.is_async:
            result = run_task_function(task_fn, args, kwargs)
        elif limit is None:
            result = await run_task_coroutine(task_fn, args, kwargs)
        else:
            try:
                async with asyncio.timeout(limit):
                    result = await run_task_coroutine(task_fn, args, kwargs)
            except TimeoutError:
                # Only the deadline raises here: a TimeoutError of the task is its own result.
                return timed_out_result_json(task_name, limit), False
        steps.send(result)
    except StopIteration as done:
        return cast("tuple[str, bool]", done.value)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return escaped_result(exc)
    raise AssertionError("an execution yields one call")  # pragma: no cover


@dataclass(eq=False)
class _Batch:
    """What a child serving from its loop runs: its async tasks, and ``def`` tasks waiting."""

    conn: Connection
    app: Horsies
    running: set[asyncio.Task[None]] = field(default_factory=set[asyncio.Task[None]])
    by_id: dict[str, asyncio.Task[None]] = field(default_factory=dict[str, asyncio.Task[None]])
    later: list[tuple[Any, ...]] = field(default_factory=list[tuple[Any, ...]])
    """``def`` tasks waiting for the async ones to end (each then runs alone)."""
    replies: list[tuple[str, str, bool]] = field(default_factory=list[tuple[str, str, bool]])
    """Results not written yet: those of one turn of the loop go back in one message."""
    stop: bool = False
    """The worker asked the child to stop, or its pipe closed."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, message: tuple[Any, ...]) -> None:
        _, task_id, task_name, args_json, kwargs_json, run = message
        job = self._run(task_id, str(task_name), args_json, kwargs_json, RunFacts.from_wire(run))
        task = asyncio.get_running_loop().create_task(job)
        self.running.add(task)
        self.by_id[task_id] = task
        task.add_done_callback(self._ended)

    async def _run(
        self,
        task_id: str,
        task_name: str,
        args_json: str | None,
        kwargs_json: str | None,
        run: RunFacts,
    ) -> None:
        try:
            result_json, ok = await execute_task_async(
                self.app, task_name, args_json, kwargs_json, run
            )
        except asyncio.CancelledError:
            # Stopped by the worker (cancel() of the running task): that is its end.
            result_json, ok = stopped_result_json(task_name), False
        finally:
            self.by_id.pop(task_id, None)
        self._reply(task_id, result_json, ok)

    def run_now(self, message: tuple[Any, ...]) -> None:
        """Run a ``def`` task to its end, the loop waiting: it has the process to itself."""
        self.flush()  # the results of the tasks before it must not wait for it
        _, task_id, task_name, args_json, kwargs_json, run = message
        result_json, ok = execute_task(self.app, str(task_name), args_json, kwargs_json,
                                       RunFacts.from_wire(run))  # fmt: skip
        self._reply(task_id, result_json, ok)

    def _reply(self, task_id: str, result_json: str, ok: bool) -> None:
        if not self.replies:
            asyncio.get_running_loop().call_soon(self.flush)
        self.replies.append((task_id, result_json, ok))

    def flush(self) -> None:
        """Write the results gathered so far: the tasks that ended in one turn of the loop share
        one message (and one wake-up of the worker)."""
        replies, self.replies = self.replies, []
        if not replies:
            return
        reply = ("result", *replies[0]) if len(replies) == 1 else ("results", replies)
        try:
            # As Connection.send, without a new ForkingPickler per message (see children.py).
            self.conn.send_bytes(pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            self.stop = True

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.changed.set()

    def on_readable(self) -> None:
        """One message from the worker (the loop calls again while more are waiting)."""
        try:
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            self.stop = True
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.changed.set()
            return
        except BaseException:
            traceback.print_exc()  # a message we cannot unpickle: nothing to answer to
            return
        self.receive(message)

    def receive(self, message: tuple[Any, ...]) -> None:
        """Act on one message of the worker."""
        kind = message[0]
        if kind == "stop":
            self.stop = True
        elif kind == "cancel":
            task = self.by_id.get(str(message[1]))
            if task is not None:
                task.cancel()
        elif kind == "run":
            self._take(message)
        elif kind == "runs":
            for run in message[1]:
                self._take(run)
        self.changed.set()

    def _take(self, message: tuple[Any, ...]) -> None:
        task = self.app.tasks.get(str(message[2]))
        if task is None or task.is_async:  # an unknown name fails at once, without blocking
            self.start(message)
        else:
            self.later.append(message)


async def _serve(batch: _Batch, first: tuple[Any, ...]) -> None:
    loop = asyncio.get_running_loop()
    fd = batch.conn.fileno()
    batch.receive(first)
    loop.add_reader(fd, batch.on_readable)
    try:
        while batch.running or not batch.stop:
            if batch.later and not batch.running:
                batch.run_now(batch.later.pop(0))
                continue
            batch.changed.clear()
            await batch.changed.wait()
    finally:
        loop.remove_reader(fd)
        batch.flush()


def serve_async(conn: Connection, app: Horsies, first: tuple[Any, ...]) -> None:
    """Serve the child's pipe from its event loop from now on, starting with the async task(s) of
    the ``run`` or ``runs`` message ``first``: each async task starts as it arrives, a ``def``
    task runs alone once no async task runs. Returns when the worker asks the child to stop or
    its pipe closes, once the running tasks have ended."""
    child_loop().run_until_complete(_serve(_Batch(conn, app), first))
