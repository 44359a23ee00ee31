"""Concurrent ``send_async`` calls of one event loop sharing their round trips."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias

from horsies.broker.driver_errors import NoConnection
from horsies.broker.enqueue import insert_rows_query, task_insert_step
from horsies.broker.errors import BrokerError
from horsies.broker.steps import Step

__all__ = ["Insert", "SendCoalescer"]

_MAX_COALESCED: Final = 1000
"""Most concurrent sends one coalesced insert carries."""

Insert: TypeAlias = Callable[[Step, Sequence[tuple[Any, ...]]], Awaitable[None]]
"""Runs one insert step of new task rows (the broker's ``enqueue.insert_program``)."""


class _PendingSend:
    """A send waiting for the next coalesced insert: its row and the future its caller awaits."""

    __slots__ = ("future", "row")

    def __init__(self, row: tuple[Any, ...], future: asyncio.Future[None]) -> None:
        self.row = row
        self.future = future


def _data_may_be_at_fault(exc: Exception) -> bool:
    """Whether an insert of several rows may have failed because of some of them, so that fewer
    rows could succeed: not when the connection was lost, none could be had (database unreachable,
    pool exhausted) or the broker is closed; those fail every row alike."""
    if isinstance(exc, BrokerError):
        return not (
            exc.connection_lost or exc.unreachable or isinstance(exc.__cause__, NoConnection)
        )
    return not isinstance(exc, RuntimeError)


def _settle(pending: Iterable[_PendingSend], error: Exception | None) -> None:
    """Resolve the futures of ``pending`` sends whose callers still wait: done, or ``error``."""
    for send in pending:
        if not send.future.done():
            if error is None:
                send.future.set_result(None)
            else:
                send.future.set_exception(error)


def _cancel(pending: Iterable[_PendingSend]) -> None:
    for send in pending:
        send.future.cancel()


class SendCoalescer:
    """Shares round trips between the concurrent ``enqueue_async`` calls of one event loop.

    A send that finds no insert of this loop in flight inserts its row at once, alone (a lone send
    waits for nothing). A send that arrives while one is in flight queues its row; a flusher task
    then inserts every queued row with one statement (one transaction, one WAL flush for the lot),
    again and again while rows keep queueing, and resolves each caller's future once the statement
    has committed: every call still returns only when its own task is durable. No timer: a batch
    holds only what was already waiting.

    Failures stay per call. A batch refused for a reason that may lie in some of its rows (a taken
    task id, a value the server refuses, a statement timeout) is split in halves and each half tried
    again, down to single rows, so only the calls whose rows cannot be stored fail, each with its
    own error; a batch that got no connection fails every call of it at once. A batch whose
    connection is lost mid-statement is repeated as one (``enqueue.insert_program``: it tells
    whether the lost attempt committed), so its outcome is never unknown and no row is stored twice;
    when the database stays out of reach, every call of the batch gets that error. A caller
    cancelled before its row was taken sends nothing; once taken, its row is stored whether the
    caller still waits or not.
    """

    def __init__(self, insert: Insert) -> None:
        # No reference to the loop: the broker keeps coalescers in a dict weakly keyed by loop.
        self._insert_rows = insert
        self._queue: deque[_PendingSend] = deque()
        self._direct = 0
        self._flusher: asyncio.Task[None] | None = None

    async def insert(self, row: tuple[Any, ...]) -> None:
        """Insert one task row (``enqueue.request_row``); returns once it is committed."""
        if not self._direct and self._flusher is None:
            self._direct += 1
            try:
                await self._insert_rows(task_insert_step(row), (row,))
            finally:
                self._direct -= 1
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append(_PendingSend(row, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="horsies-send-coalescer")
        await future

    def _take(self) -> list[_PendingSend]:
        queue = self._queue
        batch: list[_PendingSend] = []
        while queue and len(batch) < _MAX_COALESCED:
            send = queue.popleft()
            if not send.future.done():  # done: its caller was cancelled while it waited
                batch.append(send)
        return batch

    async def _flush(self) -> None:
        batch: list[_PendingSend] = []
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._insert(batch)
                batch = []
        except BaseException:
            # Cancelled (the loop is shutting down): nobody may wait forever.
            _cancel(batch)
            _cancel(self._queue)
            self._queue.clear()
            raise
        finally:
            self._flusher = None

    async def _insert(self, batch: list[_PendingSend]) -> None:
        rows = [send.row for send in batch]
        insert = task_insert_step(rows[0]) if len(rows) == 1 else insert_rows_query(rows)
        try:
            await self._insert_rows(insert, rows)
        except Exception as exc:
            if len(batch) == 1 or not _data_may_be_at_fault(exc):
                _settle(batch, exc)
                return
            # Refused for a reason of its data: nothing was stored (one statement); find the rows
            # at fault by halves, in order.
            middle = len(batch) // 2
            await self._insert(batch[:middle])
            await self._insert(batch[middle:])
            return
        _settle(batch, None)
