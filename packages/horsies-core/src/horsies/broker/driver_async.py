"""The async driver: carries out programs and operations for asyncio callers.

Mirrors ``driver_sync`` part for part — running a step on a connection, running a program — and
holds no decision of its own: those are in ``pool_rules``, ``prepared``, ``steps`` and
``programs``. Its connection pools, one per running event loop, are in ``async_pools``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import psycopg
from psycopg import pq
from psycopg.rows import dict_row, tuple_row

from horsies.broker import prepared
from horsies.broker.async_pools import AsyncConn, AsyncPools
from horsies.broker.driver_errors import translate_error
from horsies.broker.migrations import SchemaGate, migrate_program
from horsies.broker.pool_rules import checkout_wait
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
    "AsyncEffects",
    "AsyncWaiter",
    "run_any",
    "run_op",
    "run_step",
]

_log = get_logger("broker")
T = TypeVar("T")

_PIPELINE_SUPPORTED = psycopg.Pipeline.is_supported()
_IDLE = pq.TransactionStatus.IDLE
_CLOSE_TIMEOUT_S = 5.0


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


async def _run_prepared(
    conn: AsyncConn, step: Prepared, echo: bool, *, again: bool = True
) -> QueryResult:
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
    if again and prepared.is_deallocated(res, pgconn):
        # Once: a statement that vanishes again at once is not ours to keep (a pooler in front
        # that hands each statement to another server connection), so its error is the result.
        names.names.discard(step.name)
        return await _run_prepared(conn, step, echo, again=False)
    return prepared.prepared_result(res)


def _cursor(conn: AsyncConn, query: Query | None = None) -> psycopg.AsyncCursor[Any]:
    rows = dict_row if query is not None and query.rows == "dict" else tuple_row
    if conn.cursor_factory is psycopg.AsyncCursor:
        return conn.cursor(row_factory=rows)
    # A caller's connection (sends made `within` it) may make other cursors or rows of another
    # shape: the steps need plain ones.
    return psycopg.AsyncCursor(conn, row_factory=rows)


async def _result(cur: psycopg.AsyncCursor[Any], query: Query) -> QueryResult:
    res = cur.pgresult
    has_rows = query.rows != "none" and res is not None and res.status == pq.ExecStatus.TUPLES_OK
    return QueryResult(await cur.fetchall() if has_rows else [], cur.rowcount)


async def run_step(conn: AsyncConn, step: Step, echo: bool = False) -> QueryResult:
    """Run one step on ``conn`` (the caller owns transactions)."""
    if isinstance(step, Prepared):
        return await _run_prepared(conn, step, echo)
    if isinstance(step, Copy | CopyData):
        async with _cursor(conn) as cur, cur.copy(step.sql) as copy:
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


async def run_any(conn: AsyncConn, op: Op[Any] | Step, echo: bool) -> Any:
    """Run a step or drive an operation on ``conn`` (the caller owns transactions)."""
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


class AsyncEffects:
    """Carries out programs for async callers: :meth:`run` one ``Run`` (where its connection comes
    from is the subclass's), :meth:`drive` the rest."""

    async def run(self, effect: Run[T], *, bootstrap: bool = False) -> T:
        """Carry out one :class:`~horsies.broker.programs.Run`."""
        raise NotImplementedError

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
                        await asyncio.sleep(effect.seconds)
                except Exception as exc:
                    error = exc
        finally:
            program.close()
            if listening is not None:
                listening[0].unregister(listening[1])


@dataclass(eq=False)
class AsyncDriver(AsyncEffects):
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
                        result = await run_any(conn, op, echo)
                else:
                    result = await run_any(conn, op, echo)
                failed = False
            finally:
                await pool.putconn(conn, failed=failed)
            return result
        except psycopg.Error as exc:
            raise translate_error(exc, effect.action) from exc
        finally:
            if not isinstance(op, STEP_TYPES):
                op.close()


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
