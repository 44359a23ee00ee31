"""The async driver's connection pools: one per running event loop, since a connection belongs
to one loop (see ``pool_rules`` for the rules every pool follows).

A pool opens connections in the task that needs one (no background tasks) and closes itself when
its loop shuts down: ``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio finalise async
generators before closing the loop, and one serves as the shutdown hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import psycopg
from psycopg import pq

from horsies.broker.pool_rules import PoolLimits, PoolState, next_delay, pool_name
from horsies.config import PostgresConfig
from horsies.logs import get_logger

__all__ = ["AsyncConn", "AsyncPool", "AsyncPools"]

_log = get_logger("broker")

AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]
_IDLE = pq.TransactionStatus.IDLE
_CLOSE_TIMEOUT_S = 5.0


class AsyncPool:
    """The connection pool of one event loop (see ``pool_rules`` for its rules)."""

    def __init__(self, conninfo: str, limits: PoolLimits) -> None:
        self._conninfo = conninfo
        self._limits = limits
        self._state: PoolState[AsyncConn] = PoolState(limits)
        self._returned = asyncio.Condition()
        self._waiting = 0  # checkouts waiting for a connection to come back

    async def getconn(self, timeout: float | None = None) -> AsyncConn:
        """A connection (autocommit), waiting at most ``timeout`` seconds (default
        ``pool_timeout``); then :class:`~horsies.broker.errors.NoConnection` says why none came.
        Hand it back with :meth:`putconn`."""
        wait_s = self._limits.timeout_s if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        while True:
            stale: list[AsyncConn] = []
            # The take and the wait share the lock that putconn notifies under: no lost wake-up.
            async with self._returned:
                take = self._state.take(time.monotonic())
                while take.conn is None and not take.open_slot:
                    stale += take.stale
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        await _close(stale)
                        raise self._state.failures.no_connection(wait_s, self._limits.max_size)
                    self._waiting += 1
                    try:
                        async with asyncio.timeout(remaining):
                            await self._returned.wait()
                    except TimeoutError:
                        pass
                    finally:
                        self._waiting -= 1
                    take = self._state.take(time.monotonic())
            await _close([*stale, *take.stale])
            if take.conn is None:
                return await self._open(deadline, wait_s)
            if not take.ping or await self._alive(take.conn):
                return take.conn

    async def _open(self, deadline: float, wait_s: float) -> AsyncConn:
        conn: AsyncConn | None = None
        attempt = 0
        try:
            while conn is None:
                remaining = deadline - time.monotonic()
                try:
                    conn = await psycopg.AsyncConnection.connect(
                        self._conninfo,
                        autocommit=True,
                        application_name="horsies",
                        connect_timeout=self._limits.connect_timeout(remaining),
                    )
                except psycopg.OperationalError as exc:
                    lasting = self._state.failures.record(exc)
                    if lasting is not None:
                        raise lasting from None
                    attempt += 1
                    delay = next_delay(attempt)
                    if time.monotonic() + delay >= deadline:
                        raise self._state.failures.no_connection(
                            wait_s, self._limits.max_size
                        ) from None
                    await asyncio.sleep(delay)
            self._state.failures.clear()
            return conn
        finally:
            self._state.opened(conn, time.monotonic())
            if conn is None:
                await self._wake_one()

    async def _alive(self, conn: AsyncConn) -> bool:
        try:
            await conn.execute("")
        except psycopg.Error:
            await _close(self._state.discard(conn))
            return False
        return True

    async def _wake_one(self) -> None:
        if self._waiting:
            async with self._returned:
                self._returned.notify()

    async def putconn(self, conn: AsyncConn, *, failed: bool) -> None:
        """Hand back a connection from :meth:`getconn`: an open transaction is committed, or rolled
        back when ``failed``."""
        try:
            await _end_transaction(conn, failed)
        finally:
            stale = self._state.give_back(conn, time.monotonic())
            await self._wake_one()
            await _close(stale)

    async def close(self) -> None:
        """Close the idle connections now and the others as they come back (idempotent)."""
        await _close(self._state.close())
        async with self._returned:
            self._returned.notify_all()


async def _close(conns: list[AsyncConn]) -> None:
    for conn in conns:
        with contextlib.suppress(Exception):
            await conn.close()


async def _end_transaction(conn: AsyncConn, failed: bool) -> None:
    if conn.closed or conn.pgconn.transaction_status == _IDLE:
        return
    if not failed:
        await conn.commit()
        return
    try:
        await conn.rollback()
    except Exception as exc:
        _log.warning("error ignored in rollback on %s: %s", conn, exc)


class _LoopEntry:
    """One loop's pool and the async generator that closes it when the loop shuts down."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: AsyncPool) -> None:
        self.loop = loop
        self.pool = pool
        self.closer: AsyncGenerator[None] | None = None


async def _close_at_loop_shutdown(
    entry: _LoopEntry, forget: Callable[[_LoopEntry], None]
) -> AsyncGenerator[None]:
    # Suspended after its first step; the loop's shutdown_asyncgens() (asyncio.run, Runner,
    # pytest-asyncio) or our own close runs the finally, inside the loop, before it closes.
    try:
        yield
    finally:
        forget(entry)  # nothing keeps the closed loop alive
        await entry.pool.close()


class AsyncPools:
    """One :class:`AsyncPool` per running event loop, each created on first use in its loop.

    ``size`` None sizes the pools from the config; a number makes small pools (one connection
    kept, at most ``size``): for a sequential hot path, where reusing the same connection (and so
    the same server process, with its caches warm) beats taking turns over several.
    """

    def __init__(
        self, config: PostgresConfig, *, name: str = "horsies-async", size: int | None = None
    ) -> None:
        self._conninfo = config.conninfo
        self._limits = PoolLimits.from_config(config, pool_name(name), size)
        self._lock = threading.Lock()
        # Ownership: mutated under _lock by any thread; each pool is only used from its own loop.
        self._pools: dict[asyncio.AbstractEventLoop, _LoopEntry] = {}
        self._pid = os.getpid()
        self._closed = False

    async def pool(self) -> AsyncPool:
        """The current loop's pool."""
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is not None and self._pid == os.getpid():
            return entry.pool
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if self._pid != os.getpid():
                # Inherited through fork: the connections belong to the parent.
                self._pools.clear()
                self._pid = os.getpid()
            for dead in [lp for lp in self._pools if lp.is_closed()]:
                # Closed without finalising async generators: nothing can be awaited there any
                # more; dropping the entry lets garbage collection close its connections.
                del self._pools[dead]
            entry = self._pools.get(loop)
            created = entry is None
            if entry is None:
                entry = self._pools[loop] = _LoopEntry(
                    loop, AsyncPool(self._conninfo, self._limits)
                )
        if created:
            closer = _close_at_loop_shutdown(entry, self._forget)
            await anext(closer)
            entry.closer = closer
        return entry.pool

    def _forget(self, entry: _LoopEntry) -> None:
        with self._lock:
            if self._pools.get(entry.loop) is entry:
                del self._pools[entry.loop]

    async def close_current(self) -> None:
        """Close the current loop's pool (call from that loop)."""
        with self._lock:
            entry = self._pools.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await _close_entry(entry)

    def close_all(self, *, wait_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Close every pool from synchronous code: pools of loops running in other threads are
        closed in their loop; pools of stopped loops are closed here; pools of closed loops are
        dropped."""
        with self._lock:
            self._closed = True
            entries = list(self._pools.values())
            self._pools.clear()
        if self._pid != os.getpid():
            return
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for entry in entries:
            loop = entry.loop
            if loop.is_closed():
                continue
            if loop is current:
                # Called synchronously from inside this loop: schedule, cannot wait.
                _in_background(loop, _close_entry(entry))
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(_close_entry(entry), loop)
                with contextlib.suppress(Exception):
                    future.result(wait_s)
            else:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(_close_entry(entry))


_background: set[asyncio.Task[None]] = set()  # keeps fire-and-forget close tasks referenced


def _in_background(loop: asyncio.AbstractEventLoop, job: Coroutine[Any, Any, None]) -> None:
    task = loop.create_task(job)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _close_entry(entry: _LoopEntry) -> None:
    closer, entry.closer = entry.closer, None
    if closer is not None:
        await closer.aclose()
    else:
        await entry.pool.close()
