"""Running ``async def`` tasks in a worker child, several at once, on one event loop.

A child serves its pipe one message at a time (``child_main``). When a task to run is an ``async
def`` task it hands over to :func:`serve_async`: the task starts on the child's loop, and while
any async task runs the pipe is read from the loop, so each further async task the worker sends
starts at once beside the others. Each result is written back the moment its task ends (in any
order: the worker matches results by task id). When the last one ends, :func:`serve_async`
returns and the child reads its pipe as before. The worker never sends a ``def`` task to a child
that runs async tasks; if one came, it would run after them.

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

from horsies_worker.execution import (
    RunFacts,
    escaped_result,
    execution_steps,
    stopped_result_json,
    timed_out_result_json,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from horsies.app import Horsies

__all__ = ["child_loop", "execute_task_async", "is_async_run", "serve_async"]


@functools.cache
def child_loop() -> asyncio.AbstractEventLoop:
    """The child's one event loop, made for its first ``async def`` task and kept for the
    child's life, so what a task leaves on it (a client's connection pool) serves the next."""
    return asyncio.new_event_loop()


def is_async_run(app: Horsies, message: tuple[Any, ...]) -> bool:
    """True when a ``run`` message is for an ``async def`` task of ``app``."""
    task = app.tasks.get(str(message[2]))
    return task is not None and task.is_async


async def execute_task_async(
    app: Horsies,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    run: RunFacts | None = None,
) -> tuple[str, bool]:
    """``execute_task`` on the running loop: the same steps and outcomes, the task awaited and
    cancelled at its time limit (``TASK_TIMEOUT``). A cancellation of the caller propagates."""
    steps = execution_steps(app, task_name, args_json, kwargs_json, run)
    try:
        task_fn, args, kwargs = next(steps)
        if task_fn.is_async:
            limit = None if run is None else run.time_limit_s
            try:
                async with asyncio.timeout(limit):
                    result = await run_task_coroutine(task_fn, args, kwargs)
            except TimeoutError:
                # Only the deadline raises here: a TimeoutError of the task is its own result.
                assert limit is not None
                return timed_out_result_json(task_name, limit), False
        else:
            result = run_task_function(task_fn, args, kwargs)
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
    """The async tasks a child runs at once, and what its pipe said meanwhile."""

    conn: Connection
    app: Horsies
    running: set[asyncio.Task[None]] = field(default_factory=set[asyncio.Task[None]])
    by_id: dict[str, asyncio.Task[None]] = field(default_factory=dict[str, asyncio.Task[None]])
    later: list[tuple[Any, ...]] = field(default_factory=list[tuple[Any, ...]])
    """``def`` tasks that arrived meanwhile (run once the async ones are done)."""
    stop: bool = False
    """The worker asked the child to stop, or its pipe closed."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, message: tuple[Any, ...]) -> None:
        _, task_id, task_name, args_json, kwargs_json, run = message
        job = self._run(task_id, str(task_name), args_json, kwargs_json, RunFacts(*run))
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
        try:
            # As Connection.send, without a new ForkingPickler per message (see children.py).
            reply = ("result", task_id, result_json, ok)
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
        kind = message[0]
        if kind == "stop":
            self.stop = True
        elif kind == "cancel":
            task = self.by_id.get(str(message[1]))
            if task is not None:
                task.cancel()
        elif kind == "run":
            task = self.app.tasks.get(str(message[2]))
            if task is None or task.is_async:  # an unknown name fails at once, without blocking
                self.start(message)
            else:
                self.later.append(message)
        self.changed.set()


async def _serve(batch: _Batch, first: tuple[Any, ...]) -> None:
    loop = asyncio.get_running_loop()
    fd = batch.conn.fileno()
    batch.start(first)
    loop.add_reader(fd, batch.on_readable)
    try:
        while batch.running:
            batch.changed.clear()
            await batch.changed.wait()
    finally:
        loop.remove_reader(fd)


def serve_async(
    conn: Connection, app: Horsies, first: tuple[Any, ...]
) -> tuple[bool, list[tuple[Any, ...]]]:
    """Run the async task of the ``run`` message ``first`` and every async task sent while any
    runs; return once none runs: whether the child must stop (asked to, or its pipe closed), and
    the ``run`` messages of ``def`` tasks that arrived meanwhile, in order."""
    batch = _Batch(conn, app)
    child_loop().run_until_complete(_serve(batch, first))
    return batch.stop, batch.later
