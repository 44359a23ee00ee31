"""The sync driver: carries out programs and operations for blocking callers.

Mirrors ``driver_async`` part for part — the connection pool, running a step on a connection,
running a program — and holds no decision of its own: those are in ``pool_rules``, ``prepared``,
``steps`` and ``programs``. No event loop is ever created for a sync call, so the sync API works
from any thread, also from inside a running event loop (which it then blocks).

One :class:`SyncPool` per broker serves every thread. It opens connections in the thread that
needs one (no background threads), hands out the most recently returned idle connection, and after
a fork starts afresh: the inherited connections belong to the parent.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import dict_row, tuple_row

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
    "SyncConn",
    "SyncDriver",
    "SyncEffects",
    "SyncPool",
    "SyncWaiter",
    "run_any",
    "run_op",
    "run_step",
]

_log = get_logger("broker")
T = TypeVar("T")

SyncConn = psycopg.Connection[tuple[Any, ...]]
_PIPELINE_SUPPORTED = psycopg.Pipeline.is_supported()
"""Pipeline mode needs libpq >= 14 (the binary wheels ship one). With an older libpq a pipeline
runs its statements one by one in a transaction: same all-or-nothing, more round trips."""
_IDLE = pq.TransactionStatus.IDLE


# -- the pool --------------------------------------------------------------------------------------


class SyncPool:
    """The broker's sync connection pool (see ``pool_rules`` for its rules)."""

    def __init__(self, config: PostgresConfig, name: str = "horsies-sync") -> None:
        self._conninfo = config.conninfo
        self._limits = PoolLimits.from_config(config, pool_name(name))
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._state: PoolState[SyncConn] = PoolState(self._limits)
        self._waiting = 0  # checkouts waiting for a connection to come back (under _lock)
        self._pid = os.getpid()

    def getconn(self, timeout: float | None = None) -> SyncConn:
        """A connection (autocommit), waiting at most ``timeout`` seconds (default
        ``pool_timeout``); then :class:`~horsies.broker.errors.NoConnection` says why none came.
        Hand it back with :meth:`putconn`."""
        wait_s = self._limits.timeout_s if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        while True:
            stale: list[SyncConn] = []
            with self._lock:
                self._forget_after_fork()
                take = self._state.take(time.monotonic())
                while take.conn is None and not take.open_slot:
                    stale += take.stale
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        _close(stale)
                        raise self._state.failures.no_connection(wait_s, self._limits.max_size)
                    self._waiting += 1
                    try:
                        self._returned.wait(remaining)
                    finally:
                        self._waiting -= 1
                    take = self._state.take(time.monotonic())
            _close([*stale, *take.stale])
            if take.conn is None:
                return self._open(deadline, wait_s)
            if not take.ping or self._alive(take.conn):
                return take.conn

    def _forget_after_fork(self) -> None:
        if self._pid != os.getpid():
            # The inherited connections share their sockets with the parent's: never close them.
            self._pid = os.getpid()
            closed = self._state.closed
            self._state = PoolState(self._limits)
            self._state.closed = closed

    def _open(self, deadline: float, wait_s: float) -> SyncConn:
        conn: SyncConn | None = None
        attempt = 0
        try:
            while conn is None:
                remaining = deadline - time.monotonic()
                try:
                    conn = psycopg.Connection.connect(
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
                    time.sleep(delay)
            self._state.failures.clear()
            return conn
        finally:
            with self._lock:
                self._state.opened(conn, time.monotonic())
                if conn is None and self._waiting:
                    self._returned.notify()

    def _alive(self, conn: SyncConn) -> bool:
        try:
            conn.execute("")
        except psycopg.Error:
            with self._lock:
                stale = self._state.discard(conn)
            _close(stale)
            return False
        return True

    def putconn(self, conn: SyncConn, *, failed: bool) -> None:
        """Hand back a connection from :meth:`getconn`: an open transaction is committed, or rolled
        back when ``failed``."""
        try:
            _end_transaction(conn, failed)
        finally:
            with self._lock:
                stale = self._state.give_back(conn, time.monotonic())
                if self._waiting:
                    self._returned.notify()
            _close(stale)

    def close(self) -> None:
        """Close the idle connections now and the others as they come back (idempotent)."""
        with self._lock:
            if self._pid != os.getpid():
                self._state.closed = True
                return
            stale = self._state.close()
            self._returned.notify_all()
        _close(stale)


def _close(conns: list[SyncConn]) -> None:
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()


def _end_transaction(conn: SyncConn, failed: bool) -> None:
    """What leaving ``with conn:`` does, skipped when there is nothing to end (autocommit, idle:
    the common case)."""
    if conn.closed or conn.pgconn.transaction_status == _IDLE:
        return
    if not failed:
        conn.commit()
        return
    try:
        conn.rollback()
    except Exception as exc:
        _log.warning("error ignored in rollback on %s: %s", conn, exc)


# -- running steps and operations ------------------------------------------------------------------


def _wait_socket(conn: SyncConn, ready: prepared.Wait) -> None:
    fd = conn.pgconn.socket
    if ready == "r":
        select.select([fd], [], [])
    else:
        select.select([], [fd], [])


def _exchange(conn: SyncConn) -> pq.abc.PGresult:
    gen = prepared.await_results(conn.pgconn)
    try:
        ready = next(gen)
        while True:
            _wait_socket(conn, ready)
            ready = gen.send(None)
    except StopIteration as stop:
        results: list[pq.abc.PGresult] = stop.value
        return results[-1]


def _run_prepared(conn: SyncConn, step: Prepared, echo: bool, *, again: bool = True) -> QueryResult:
    names = prepared.prepared_names(conn)
    params = prepared.text_params(step) if names.usable and not echo else None
    if params is None:
        return run_step(conn, prepared.fallback_query(step), echo)
    pgconn = conn.pgconn
    if step.name not in names.names:
        pgconn.send_prepare(*prepared.prepare_args(step))
        prepared.check_prepare(_exchange(conn))
        names.names.add(step.name)
    pgconn.send_query_prepared(step.name.encode(), params)
    res = _exchange(conn)
    if again and prepared.is_deallocated(res, pgconn):
        # Once: a statement that vanishes again at once is not ours to keep (a pooler in front
        # that hands each statement to another server connection), so its error is the result.
        names.names.discard(step.name)
        return _run_prepared(conn, step, echo, again=False)
    return prepared.prepared_result(res)


def _cursor(conn: SyncConn, query: Query | None = None) -> psycopg.Cursor[Any]:
    rows = dict_row if query is not None and query.rows == "dict" else tuple_row
    if conn.cursor_factory is psycopg.Cursor:
        return conn.cursor(row_factory=rows)
    # A caller's connection (sends made `within` it) may make other cursors, such as Django's
    # client-side binding ones, or rows of another shape: the steps need plain ones.
    return psycopg.Cursor(conn, row_factory=rows)


def _result(cur: psycopg.Cursor[Any], query: Query) -> QueryResult:
    # The result status, not ``cur.description``: that builds a Column object per field.
    res = cur.pgresult
    has_rows = query.rows != "none" and res is not None and res.status == pq.ExecStatus.TUPLES_OK
    return QueryResult(cur.fetchall() if has_rows else [], cur.rowcount)


def run_step(conn: SyncConn, step: Step, echo: bool = False) -> QueryResult:
    """Run one step on ``conn`` (the caller owns transactions)."""
    if isinstance(step, Prepared):
        return _run_prepared(conn, step, echo)
    if isinstance(step, Copy | CopyData):
        with _cursor(conn) as cur, cur.copy(step.sql) as copy:
            if (
                isinstance(step, CopyData)
                and step.data is not None
                and conn.info.encoding == "utf-8"
            ):
                for chunk in step.data:
                    copy.write(chunk)
                return QueryResult([], step.count)
            copy.set_types(list(step.types))
            rows = step.rows() if isinstance(step, CopyData) else step.rows
            count = 0
            for row in rows:
                copy.write_row(row)
                count += 1
        return QueryResult([], count)
    queries = step.queries if isinstance(step, Pipeline) else (step,)
    if echo:
        for query in queries:
            _log.debug("SQL: %s | params: %r", " ".join(query.sql.split()), query.params)
    if isinstance(step, Query):
        with _cursor(conn, step) as cur:
            cur.execute(step.sql, step.params, prepare=step.prepare)
            return _result(cur, step)
    cursors: list[psycopg.Cursor[Any]] = []
    try:
        # Leaving the block sends one Sync and collects every result: a single round trip.
        with conn.pipeline() if _PIPELINE_SUPPORTED else conn.transaction():
            for query in queries:
                cur = _cursor(conn, query)
                cursors.append(cur)
                cur.execute(query.sql, query.params, prepare=query.prepare)
        parts = tuple(_result(cur, q) for cur, q in zip(cursors, queries, strict=True))
    finally:
        for cur in cursors:
            cur.close()
    return QueryResult([], -1, parts)


def run_op(conn: SyncConn, op: Op[T], echo: bool = False) -> T:
    """Drive ``op`` to completion on ``conn`` (the caller owns transactions)."""
    try:
        step = next(op)
        while True:
            step = op.send(run_step(conn, step, echo))
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()


# -- running programs ------------------------------------------------------------------------------


class SyncWaiter:
    """A blocking waiter for one id (see ``waiters.Waiter``)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._event = threading.Event()
        self._notified = False

    def notify(self) -> None:
        """Called on the listener thread: the id was notified."""
        self._notified = True
        self._event.set()

    def poke(self) -> None:
        """Called on the listener thread after a reconnect: read again."""
        self._event.set()

    def wait(self, timeout: float) -> WakeReason:
        """Block until notified/poked or ``timeout`` seconds pass."""
        woke = self._event.wait(timeout)
        self._event.clear()
        if self._notified:
            return "notified"
        return "poked" if woke else "timeout"


class SyncEffects:
    """Carries out programs for blocking callers: :meth:`run` one ``Run`` (where its connection
    comes from is the subclass's), :meth:`drive` the rest."""

    def run(self, effect: Run[T], *, bootstrap: bool = False) -> T:
        """Carry out one :class:`~horsies.broker.programs.Run`."""
        raise NotImplementedError

    def drive(self, program: Program[T], *, bootstrap: bool = False) -> T:
        """Run ``program`` to its end and return its value."""
        listening: tuple[ResultWaiters, SyncWaiter] | None = None
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
                        value = self.run(effect, bootstrap=bootstrap)
                    elif isinstance(effect, Offload):
                        value = effect.fn()
                    elif isinstance(effect, Listen):
                        waiter = SyncWaiter(effect.key)
                        effect.waiters.register(waiter)
                        listening = (effect.waiters, waiter)
                        effect.waiters.wait_listening()
                    elif listening is not None:
                        value = listening[1].wait(effect.seconds)
                    else:
                        time.sleep(effect.seconds)
                except Exception as exc:
                    error = exc
        finally:
            program.close()
            if listening is not None:
                listening[0].unregister(listening[1])


class SyncDriver(SyncEffects):
    """Runs programs and operations on a :class:`SyncPool`, bringing the schema up to date before
    the first statement."""

    def __init__(self, config: PostgresConfig, pool: SyncPool, schema: SchemaGate) -> None:
        self._config = config
        self._pool = pool
        self._schema = schema

    def migrate(self, deadline: float | None = None, action: str = "schema initialisation") -> None:
        """Bring the schema up to date unless this broker already did."""
        with self._schema.lock:
            if not self._schema.ready:
                self.drive(migrate_program(deadline, action), bootstrap=True)
                self._schema.ready = True

    def run(self, effect: Run[T], *, bootstrap: bool = False) -> T:
        """Carry out one :class:`~horsies.broker.programs.Run`; driver errors become
        ``BrokerError``. ``bootstrap``: skip the schema check (the migrations themselves)."""
        op = effect.op
        try:
            if not bootstrap and not self._schema.ready:
                self.migrate(effect.deadline, effect.action)
            conn = self._pool.getconn(checkout_wait(self._config, effect.deadline))
            failed = True
            try:
                echo = self._config.echo
                if effect.transaction:
                    with conn.transaction():
                        result = run_any(conn, op, echo)
                else:
                    result = run_any(conn, op, echo)
                failed = False
            finally:
                self._pool.putconn(conn, failed=failed)
            return result
        except psycopg.Error as exc:
            raise translate_error(exc, effect.action) from exc
        finally:
            if not isinstance(op, STEP_TYPES):
                op.close()

    def close(self) -> None:
        """Close the pool (idempotent)."""
        self._pool.close()


def run_any(conn: SyncConn, op: Op[Any] | Step, echo: bool) -> Any:
    """Run a step or drive an operation on ``conn`` (the caller owns transactions)."""
    if isinstance(op, STEP_TYPES):
        return run_step(conn, op, echo)
    return run_op(conn, op, echo)
