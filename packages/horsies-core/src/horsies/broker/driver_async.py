"""The async driver: carries out programs and operations for asyncio callers.

Mirrors ``driver_sync`` part for part — the connection pool, running a step on a connection,
running a program — and holds no decision of its own: those are in ``pool_rules``, ``prepared``,
``steps`` and ``programs``.

Connections belong to one event loop, so there is one :class:`AsyncPool` per running loop
(:class:`AsyncPools`). A pool opens connections in the task that needs one (no background tasks)
and closes itself when its loop shuts down: ``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio
finalise async generators before closing the loop, and one serves as the shutdown hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import psycopg
from psycopg import pq
from psycopg.rows import dict_row

from horsies.broker import prepared
from horsies.broker.driver_errors import translate_error
from horsies.broker.migrations import SchemaGate, migrate_program
from horsies.broker.pool_rules import PoolLimits, PoolState, checkout_wait, next_delay, pool_name
from horsies.broker.programs import Listen, Offload, Program, Run
from horsies.broker.steps import (
    STEP_TYPES,
    Copy,
    CopyData,
    Op,
    Pipeline,
    Prepared,
    Query,
    QueryResult,
    Step,
)
from horsies.broker.waiters import ResultWaiters, WakeReason
from horsies.config import PostgresConfig
from horsies.logs import get_logger

__all__ = [
    "AsyncConn",
    "AsyncDriver",
    "AsyncPool",
    "AsyncPools",
    "AsyncWaiter",
    "run_op",
    "run_step",
]

_log = get_logger("broker")
T = TypeVar("T")

AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]
_PIPELINE_SUPPORTED = psycopg.Pipeline.is_supported()
_IDLE = pq.TransactionStatus.IDLE
_CLOSE_TIMEOUT_S = 5.0


# -- the pools -------------------------------------------------------------------------------------


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


# -- running steps and operations ------------------------------------------------------------------


async def _wait_socket(conn: AsyncConn, ready: prepared.Wait) -> None:
    loop = asyncio.get_running_loop()
    fd = conn.pgconn.socket
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    if ready == "r":
        loop.add_reader(fd, wake)
        try:
            await done
        finally:
            loop.remove_reader(fd)
    else:
        loop.add_writer(fd, wake)
        try:
            await done
        finally:
            loop.remove_writer(fd)


async def _exchange(conn: AsyncConn) -> pq.abc.PGresult:
    gen = prepared.await_results(conn.pgconn)
    try:
        ready = next(gen)
        while True:
            await _wait_socket(conn, ready)
            ready = gen.send(None)
    except StopIteration as stop:
        results: list[pq.abc.PGresult] = stop.value
        return results[-1]


async def _run_prepared(conn: AsyncConn, step: Prepared, echo: bool) -> QueryResult:
    names = prepared.prepared_names(conn)
    params = prepared.text_params(step) if names.usable and not echo else None
    if params is None:
        return await run_step(conn, prepared.fallback_query(step), echo)
    pgconn = conn.pgconn
    if step.name not in names.names:
        pgconn.send_prepare(*prepared.prepare_args(step))
        prepared.check_prepare(await _exchange(conn))
        names.names.add(step.name)
    pgconn.send_query_prepared(step.name.encode(), params)
    res = await _exchange(conn)
    if prepared.is_deallocated(res, pgconn):
        names.names.discard(step.name)
        return await _run_prepared(conn, step, echo)
    return prepared.prepared_result(res)


def _cursor(conn: AsyncConn, query: Query) -> psycopg.AsyncCursor[Any]:
    return conn.cursor(row_factory=dict_row) if query.rows == "dict" else conn.cursor()


async def _result(cur: psycopg.AsyncCursor[Any], query: Query) -> QueryResult:
    res = cur.pgresult
    has_rows = query.rows != "none" and res is not None and res.status == pq.ExecStatus.TUPLES_OK
    return QueryResult(await cur.fetchall() if has_rows else [], cur.rowcount)


async def run_step(conn: AsyncConn, step: Step, echo: bool = False) -> QueryResult:
    """Run one step on ``conn`` (the caller owns transactions)."""
    if isinstance(step, Prepared):
        return await _run_prepared(conn, step, echo)
    if isinstance(step, Copy | CopyData):
        async with conn.cursor() as cur, cur.copy(step.sql) as copy:
            if (
                isinstance(step, CopyData)
                and step.data is not None
                and conn.info.encoding == "utf-8"
            ):
                for chunk in step.data:
                    await copy.write(chunk)
                return QueryResult([], step.count)
            copy.set_types(list(step.types))
            rows = step.rows() if isinstance(step, CopyData) else step.rows
            count = 0
            for row in rows:
                await copy.write_row(row)
                count += 1
        return QueryResult([], count)
    queries = step.queries if isinstance(step, Pipeline) else (step,)
    if echo:
        for query in queries:
            _log.debug("SQL: %s | params: %r", " ".join(query.sql.split()), query.params)
    if isinstance(step, Query):
        async with _cursor(conn, step) as cur:
            await cur.execute(step.sql, step.params, prepare=step.prepare)
            return await _result(cur, step)
    cursors: list[psycopg.AsyncCursor[Any]] = []
    try:
        # Leaving the block sends one Sync and collects every result: a single round trip.
        async with conn.pipeline() if _PIPELINE_SUPPORTED else conn.transaction():
            for query in queries:
                cur = _cursor(conn, query)
                cursors.append(cur)
                await cur.execute(query.sql, query.params, prepare=query.prepare)
        parts = tuple([await _result(cur, q) for cur, q in zip(cursors, queries, strict=True)])
    finally:
        for cur in cursors:
            await cur.close()
    return QueryResult([], -1, parts)


async def run_op(conn: AsyncConn, op: Op[T], echo: bool = False) -> T:
    """Drive ``op`` to completion on ``conn`` (the caller owns transactions)."""
    try:
        step = next(op)
        while True:
            step = op.send(await run_step(conn, step, echo))
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()


async def _run_any(conn: AsyncConn, op: Op[Any] | Step, echo: bool) -> Any:
    if isinstance(op, STEP_TYPES):
        return await run_step(conn, op, echo)
    return await run_op(conn, op, echo)


# -- running programs ------------------------------------------------------------------------------


class AsyncWaiter:
    """An awaitable waiter for one id, bound to the running event loop (see ``waiters.Waiter``)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._notified = False

    def _wake_from_thread(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._event.set)

    def notify(self) -> None:
        """Called on the listener thread: the id was notified."""
        self._notified = True
        self._wake_from_thread()

    def poke(self) -> None:
        """Called on the listener thread after a reconnect: read again."""
        self._wake_from_thread()

    async def wait(self, timeout: float) -> WakeReason:
        """Wait until notified/poked or ``timeout`` seconds pass."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races with
        # the event being set, and a cancelled wait must always propagate its cancellation.
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
            woke = True
        except TimeoutError:
            woke = False
        self._event.clear()
        if self._notified:
            return "notified"
        return "poked" if woke else "timeout"


@dataclass(eq=False)
class AsyncDriver:
    """Runs programs and operations on the current loop's pools: ``pools`` for everything,
    ``hot_pools`` for effects marked ``hot``, bringing the schema up to date before the first
    statement."""

    config: PostgresConfig
    pools: AsyncPools
    hot_pools: AsyncPools
    schema: SchemaGate

    async def migrate(
        self, deadline: float | None = None, action: str = "schema initialisation"
    ) -> None:
        """Bring the schema up to date unless this broker already did (concurrent first calls may
        both migrate: harmless, the migrations' advisory lock serialises them)."""
        if not self.schema.ready:
            await self.drive(migrate_program(deadline, action), bootstrap=True)
            self.schema.ready = True

    async def run(self, effect: Run[T], *, bootstrap: bool = False) -> T:
        """Carry out one :class:`~horsies.broker.programs.Run`; driver errors become
        ``BrokerError``. ``bootstrap``: skip the schema check (the migrations themselves)."""
        op = effect.op
        try:
            if not bootstrap and not self.schema.ready:
                await self.migrate(effect.deadline, effect.action)
            pool = await (self.hot_pools if effect.hot else self.pools).pool()
            conn = await pool.getconn(checkout_wait(self.config, effect.deadline))
            failed = True
            try:
                echo = self.config.echo
                if effect.transaction:
                    async with conn.transaction():
                        result = await _run_any(conn, op, echo)
                else:
                    result = await _run_any(conn, op, echo)
                failed = False
            finally:
                await pool.putconn(conn, failed=failed)
            return result
        except psycopg.Error as exc:
            raise translate_error(exc, effect.action) from exc
        finally:
            if not isinstance(op, STEP_TYPES):
                op.close()

    async def drive(self, program: Program[T], *, bootstrap: bool = False) -> T:
        """Run ``program`` to its end and return its value (a cancellation propagates)."""
        listening: tuple[ResultWaiters, AsyncWaiter] | None = None
        value: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    effect = program.send(value) if error is None else program.throw(error)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                value, error = None, None
                try:
                    if isinstance(effect, Run):
                        value = await self.run(effect, bootstrap=bootstrap)
                    elif isinstance(effect, Offload):
                        value = await _in_daemon_thread(effect.fn)
                    elif isinstance(effect, Listen):
                        waiter = AsyncWaiter(effect.key)
                        effect.waiters.register(waiter)
                        listening = (effect.waiters, waiter)
                        await effect.waiters.wait_listening_async()
                    elif listening is not None:
                        value = await listening[1].wait(effect.seconds)
                    else:
                        raise RuntimeError("Wait without Listen")
                except Exception as exc:
                    error = exc
        finally:
            program.close()
            if listening is not None:
                listening[0].unregister(listening[1])


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` (the app's code) in a daemon thread of its own and wait for it. Not the loop's
    default executor: that one is joined when the loop closes, so code that hangs would hold up
    the process's exit, and a few such calls would take every thread it has."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast("T", value))

    def run() -> None:
        try:
            value, error = fn(), None
        except BaseException as exc:  # handed to the waiting coroutine
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name="horsies-offload", daemon=True).start()
    return await future
