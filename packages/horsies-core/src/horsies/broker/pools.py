"""Connection pools and the two thin executors that run sans-IO operations on them.

An operation (see ``horsies.broker.ops``) is a generator that yields
:class:`~horsies.broker.ops.Query` steps and receives their
:class:`~horsies.broker.ops.QueryResult`; it holds every decision, so the only code that exists
twice is the loop below that feeds it: :func:`run_op_sync` on a sync connection and
:func:`run_op_async` on an async one. No event loop is ever created for a sync call.

Pools (D1): ``min_size = pool_size``, ``max_size = pool_size + max_overflow``, ``timeout =
pool_timeout``, ``max_lifetime = pool_recycle``. Connections are in autocommit mode, so a single
statement costs one round trip; a :class:`~horsies.broker.ops.Pipeline` step sends several
statements in one round trip (pipeline mode; one implicit transaction); operations whose later
statements depend on earlier results open an explicit transaction.
``pool_pre_ping`` checks a connection on checkout when it has been idle for more than a second (a
round trip on every checkout would halve the single-enqueue rate, and a connection that was just
used is known to be alive), or when the server closed it while it sat in the pool (server restart,
``pg_terminate_backend``): such a connection has unread input on its socket (the server's FATAL
message, then EOF), which every checkout looks for without a round trip (``poll`` with a zero
timeout). When a checked-out connection turns out dead, the pool's other idle connections are
checked at once: they most likely died together, and psycopg-pool would otherwise back off (1 s,
2 s, ...) between one dead connection and the next. Checkouts take the most recently returned idle
connection (psycopg-pool: the least recent), so a sequential caller keeps one warm server process;
hot paths check out with ``getconn``/``putconn`` rather than the ``connection()`` block (same
commit/rollback on return, less Python).

Besides operations, the executors run single steps (``run_step_sync``/``run_step_async``), and a
:class:`~horsies.broker.ops.Prepared` step (the single send's INSERT) goes through libpq directly.

While the database is down, each pool retries connecting with a back-off capped at 2 s
(``_Backoff``; psycopg-pool's own doubles without limit), so it is back within about 2 s of the
database, and logs one connection warning per pool every 10 s.

When no connection comes within ``pool_timeout``, the pools raise
:class:`~horsies.broker.errors.NoConnection` instead of psycopg-pool's ``PoolTimeout``: its message
says why (the last connection attempt's error, e.g. "connection refused", or "all connections in
use").

The sync pool belongs to the broker; async pools are bound to an event loop, so there is one per
running loop. Each async pool closes itself when its loop shuts down (``asyncio.run``,
``asyncio.Runner`` and pytest-asyncio all finalise async generators before closing the loop; we use
one as a shutdown hook).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Generator
from datetime import datetime
from typing import Any, Final, Self, TypeVar

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result as _error_from_result
from psycopg.generators import execute as _pq_execute
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from horsies.broker.errors import NoConnection
from horsies.broker.steps import Copy, CopyData, Op, Pipeline, Prepared, Query, QueryResult, Step
from horsies.config import PostgresConfig
from horsies.logs import get_logger
from horsies.redact import mask_database_url

__all__ = [
    "AsyncPools",
    "SyncPool",
    "run_op_async",
    "run_op_sync",
    "run_step_async",
    "run_step_sync",
]

_log = get_logger("broker")
T = TypeVar("T")

_PRE_PING_IDLE_S: Final = 1.0
# Pipeline mode needs libpq >= 14 (the binary wheels ship one). With an older system libpq a
# Pipeline step runs its statements one by one in a transaction: same all-or-nothing, more round
# trips.
_PIPELINE_SUPPORTED: Final = psycopg.Pipeline.is_supported()
_CLOSE_TIMEOUT_S: Final = 5.0
_POLLIN: Final = getattr(select, "POLLIN", 1)

SyncConn = psycopg.Connection[tuple[Any, ...]]
AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]


def _pool_kwargs(config: PostgresConfig, size: int | None = None) -> dict[str, Any]:
    return {
        "min_size": config.pool_size if size is None else 1,
        "max_size": max(1, config.pool_size + config.max_overflow if size is None else size),
        "timeout": float(config.pool_timeout),
        "max_lifetime": float(config.pool_recycle),
        "kwargs": {"autocommit": True, "application_name": "horsies"},
    }


# -- executors -------------------------------------------------------------------------------------


def _echo(query: Query) -> None:
    _log.debug("SQL: %s | params: %r", " ".join(query.sql.split()), query.params)


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], query: Query) -> bool:
    # The result status, not ``cur.description``: that builds a Column object per field on every
    # call, a measurable cost on the worker's hot path.
    res = cur.pgresult
    return query.rows != "none" and res is not None and res.status == pq.ExecStatus.TUPLES_OK


def _result_sync(cur: psycopg.Cursor[Any], query: Query) -> QueryResult:
    rows: list[Any] = cur.fetchall() if _has_rows(cur, query) else []
    return QueryResult(rows, cur.rowcount)


async def _result_async(cur: psycopg.AsyncCursor[Any], query: Query) -> QueryResult:
    rows: list[Any] = await cur.fetchall() if _has_rows(cur, query) else []
    return QueryResult(rows, cur.rowcount)


def _cursor_sync(conn: SyncConn, query: Query) -> psycopg.Cursor[Any]:
    return conn.cursor(row_factory=dict_row) if query.rows == "dict" else conn.cursor()


def _cursor_async(conn: AsyncConn, query: Query) -> psycopg.AsyncCursor[Any]:
    return conn.cursor(row_factory=dict_row) if query.rows == "dict" else conn.cursor()


# -- prepared statements through libpq ------------------------------------------------------------
#
# The single send is one INSERT; psycopg's cursor costs ~20 us of Python per execution around it
# (query conversion, parameter dumping, result bookkeeping), a tenth of a send. A `Prepared` step
# skips it: the statement is prepared once per connection under its own name and executed with
# text parameters through the connection's libpq handle, waited on by psycopg's own wait loop (so
# Ctrl-C still cancels, and a broken connection raises the same OperationalError as a cursor).

_TYPE_OIDS: Final = {"text": 25, "int4": 23, "timestamptz": 1184}
_INT4_MIN: Final = -(2**31)
_INT4_MAX: Final = 2**31 - 1
_DUPLICATE_PREPARED: Final = "42P05"
_UNDEFINED_PREPARED: Final = "26000"
_PREPARED_ATTR: Final = "_horsies_prepared"


class _PreparedNames:
    """Per connection: the statement names prepared on it, and whether the libpq path may be used
    (UTF-8 client encoding)."""

    __slots__ = ("names", "usable")

    def __init__(self, conn: SyncConn | AsyncConn) -> None:
        self.names: set[str] = set()
        self.usable = conn.info.encoding == "utf-8"


def _prepared_names(conn: SyncConn | AsyncConn) -> _PreparedNames:
    names: _PreparedNames | None = getattr(conn, _PREPARED_ATTR, None)
    if names is None:
        names = _PreparedNames(conn)
        setattr(conn, _PREPARED_ATTR, names)
    return names


_numbered_cache: dict[str, tuple[bytes, tuple[str, ...]]] = {}
_PLACEHOLDER: Final = re.compile(r"%\((\w+)\)s")


def _numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``sql`` with its ``%(name)s`` placeholders numbered ``$1``, ``$2``, ... (libpq's form), and
    the names in that order."""
    numbered = _numbered_cache.get(sql)
    if numbered is None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return f"${len(names)}"

        numbered = (_PLACEHOLDER.sub(number, sql).encode(), tuple(names))
        _numbered_cache[sql] = numbered
    return numbered


def _text_params(step: Prepared) -> list[bytes | None] | None:
    """The parameters as libpq text values, or None when one is not a plain value this path sends
    exactly as psycopg would (the caller then uses a cursor)."""
    out: list[bytes | None] = []
    for value, type_name in zip(step.params, step.types, strict=True):
        if value is None:
            out.append(None)
            continue
        tp: type[Any] = type(value)  # pyright: ignore[reportUnknownVariableType]
        if tp is str:
            if "\x00" in value:
                return None  # psycopg refuses NUL with its own error
            try:
                out.append(value.encode())
            except UnicodeEncodeError:
                return None
        elif tp is int and type_name == "int4" and _INT4_MIN <= value <= _INT4_MAX:
            out.append(str(value).encode())
        elif tp is datetime and type_name == "timestamptz" and value.tzinfo is not None:
            out.append(str(value).encode())  # what psycopg's text datetime dumper sends
        else:
            return None
    return out


def _fallback(step: Prepared) -> Query:
    _, names = _numbered(step.sql)
    return Query(step.sql, dict(zip(names, step.params, strict=True)), rows="none", prepare=True)


def _sqlstate(res: pq.abc.PGresult) -> str:
    return (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode("ascii", "replace")


def _prepared_result(res: pq.abc.PGresult) -> QueryResult:
    if res.status == pq.ExecStatus.FATAL_ERROR:
        raise _error_from_result(res, encoding="utf-8")
    count = res.command_tuples
    return QueryResult([], -1 if count is None else count)


def _check_prepare(res: pq.abc.PGresult) -> None:
    if res.status == pq.ExecStatus.FATAL_ERROR and _sqlstate(res) != _DUPLICATE_PREPARED:
        raise _error_from_result(res, encoding="utf-8")


def _prepare_step_sync(conn: SyncConn, step: Prepared, names: _PreparedNames) -> None:
    pgconn = conn.pgconn
    types = [_TYPE_OIDS[name] for name in step.types]
    pgconn.send_prepare(step.name.encode(), _numbered(step.sql)[0], param_types=types)
    _check_prepare(conn.wait(_pq_execute(pgconn))[-1])
    names.names.add(step.name)


def _run_prepared_sync(conn: SyncConn, step: Prepared, echo: bool) -> QueryResult:
    names = _prepared_names(conn)
    params = _text_params(step) if names.usable and not echo else None
    if params is None:
        return _run_step_sync(conn, _fallback(step), echo)
    if step.name not in names.names:
        _prepare_step_sync(conn, step, names)
    pgconn = conn.pgconn
    pgconn.send_query_prepared(step.name.encode(), params)
    res = conn.wait(_pq_execute(pgconn))[-1]
    if (
        res.status == pq.ExecStatus.FATAL_ERROR
        and _sqlstate(res) == _UNDEFINED_PREPARED
        and pgconn.transaction_status == pq.TransactionStatus.IDLE
    ):
        # Deallocated behind our back (DEALLOCATE ALL, DISCARD ALL): prepare it again.
        names.names.discard(step.name)
        _prepare_step_sync(conn, step, names)
        pgconn.send_query_prepared(step.name.encode(), params)
        res = conn.wait(_pq_execute(pgconn))[-1]
    return _prepared_result(res)


async def _prepare_step_async(conn: AsyncConn, step: Prepared, names: _PreparedNames) -> None:
    pgconn = conn.pgconn
    types = [_TYPE_OIDS[name] for name in step.types]
    pgconn.send_prepare(step.name.encode(), _numbered(step.sql)[0], param_types=types)
    _check_prepare((await conn.wait(_pq_execute(pgconn)))[-1])
    names.names.add(step.name)


async def _run_prepared_async(conn: AsyncConn, step: Prepared, echo: bool) -> QueryResult:
    names = _prepared_names(conn)
    params = _text_params(step) if names.usable and not echo else None
    if params is None:
        return await _run_step_async(conn, _fallback(step), echo)
    if step.name not in names.names:
        await _prepare_step_async(conn, step, names)
    pgconn = conn.pgconn
    pgconn.send_query_prepared(step.name.encode(), params)
    res = (await conn.wait(_pq_execute(pgconn)))[-1]
    if (
        res.status == pq.ExecStatus.FATAL_ERROR
        and _sqlstate(res) == _UNDEFINED_PREPARED
        and pgconn.transaction_status == pq.TransactionStatus.IDLE
    ):
        names.names.discard(step.name)
        await _prepare_step_async(conn, step, names)
        pgconn.send_query_prepared(step.name.encode(), params)
        res = (await conn.wait(_pq_execute(pgconn)))[-1]
    return _prepared_result(res)


def _run_step_sync(conn: SyncConn, step: Step, echo: bool) -> QueryResult:
    if isinstance(step, Prepared):
        return _run_prepared_sync(conn, step, echo)
    if isinstance(step, CopyData):
        with conn.cursor() as cur, cur.copy(step.sql) as copy:
            if step.data is not None and conn.info.encoding == "utf-8":
                for chunk in step.data:
                    copy.write(chunk)
            else:
                copy.set_types(list(step.types))
                for row in step.rows():
                    copy.write_row(row)
        return QueryResult([], step.count)
    if isinstance(step, Copy):
        with conn.cursor() as cur, cur.copy(step.sql) as copy:
            copy.set_types(list(step.types))
            for row in step.rows:
                copy.write_row(row)
        return QueryResult([], len(step.rows))
    queries = step.queries if isinstance(step, Pipeline) else (step,)
    if echo:
        for query in queries:
            _echo(query)
    if isinstance(step, Query):
        with _cursor_sync(conn, step) as cur:
            cur.execute(step.sql, step.params, prepare=step.prepare)
            return _result_sync(cur, step)
    cursors: list[psycopg.Cursor[Any]] = []
    try:
        # Leaving the block sends one Sync and collects every result: a single round trip.
        with conn.pipeline() if _PIPELINE_SUPPORTED else conn.transaction():
            for query in queries:
                cur = _cursor_sync(conn, query)
                cursors.append(cur)
                cur.execute(query.sql, query.params, prepare=query.prepare)
        parts = tuple(_result_sync(cur, q) for cur, q in zip(cursors, queries, strict=True))
    finally:
        for cur in cursors:
            cur.close()
    return QueryResult([], -1, parts)


async def _run_step_async(conn: AsyncConn, step: Step, echo: bool) -> QueryResult:
    if isinstance(step, Prepared):
        return await _run_prepared_async(conn, step, echo)
    if isinstance(step, CopyData):
        async with conn.cursor() as cur, cur.copy(step.sql) as copy:
            if step.data is not None and conn.info.encoding == "utf-8":
                for chunk in step.data:
                    await copy.write(chunk)
            else:
                copy.set_types(list(step.types))
                for row in step.rows():
                    await copy.write_row(row)
        return QueryResult([], step.count)
    if isinstance(step, Copy):
        async with conn.cursor() as cur, cur.copy(step.sql) as copy:
            copy.set_types(list(step.types))
            for row in step.rows:
                await copy.write_row(row)
        return QueryResult([], len(step.rows))
    queries = step.queries if isinstance(step, Pipeline) else (step,)
    if echo:
        for query in queries:
            _echo(query)
    if isinstance(step, Query):
        async with _cursor_async(conn, step) as cur:
            await cur.execute(step.sql, step.params, prepare=step.prepare)
            return await _result_async(cur, step)
    cursors: list[psycopg.AsyncCursor[Any]] = []
    try:
        # Leaving the block sends one Sync and collects every result: a single round trip.
        async with conn.pipeline() if _PIPELINE_SUPPORTED else conn.transaction():
            for query in queries:
                cur = _cursor_async(conn, query)
                cursors.append(cur)
                await cur.execute(query.sql, query.params, prepare=query.prepare)
        parts = tuple(
            [await _result_async(cur, q) for cur, q in zip(cursors, queries, strict=True)]
        )
    finally:
        for cur in cursors:
            await cur.close()
    return QueryResult([], -1, parts)


run_step_sync: Final = _run_step_sync
"""Run one step (no operation around it) on a sync connection: its result."""
run_step_async: Final = _run_step_async
"""Async twin of ``run_step_sync``."""


def run_op_sync(conn: SyncConn, op: Op[T], *, echo: bool = False) -> T:
    """Drive ``op`` to completion on a sync connection (the caller owns transactions)."""
    try:
        step = next(op)
        while True:
            step = op.send(_run_step_sync(conn, step, echo))
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()


async def run_op_async(conn: AsyncConn, op: Op[T], *, echo: bool = False) -> T:
    """Drive ``op`` to completion on an async connection (the caller owns transactions)."""
    try:
        step = next(op)
        while True:
            step = op.send(await _run_step_async(conn, step, echo))
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()


_CONNECT_ERROR_MSG: Final = "error connecting in %r: %s"
_CONNECT_ERROR_LOG_EVERY_S: Final = 10.0


class _PoolConnectLogFilter(logging.Filter):
    """Tames psycopg-pool's "error connecting in 'horsies-...': <error>" warnings of our pools.

    - A connection attempt cancelled because the pool is closing (an async pool closed while it
      still opens connections: every short ``asyncio.run`` that used the broker) is not a
      connection error, and its message is empty: dropped.
    - While the database is down every connection slot of a pool retries (see ``_Backoff``):
      one warning per pool every 10 s tells the story; the repeats are dropped.

    Other records, and every record of other pools, pass untouched.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (
            record.msg == _CONNECT_ERROR_MSG
            and isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].startswith("horsies-")
        ):
            return True
        if isinstance(args[1], asyncio.CancelledError):
            return False
        now = time.monotonic()
        with self._lock:
            last = self._last.get(args[0])
            if last is not None and now - last < _CONNECT_ERROR_LOG_EVERY_S:
                return False
            self._last[args[0]] = now
        return True


logging.getLogger("psycopg.pool").addFilter(_PoolConnectLogFilter())


# -- reconnection ----------------------------------------------------------------------------------

_RECONNECT_FIRST_S: Final = 0.25
_RECONNECT_MAX_S: Final = 2.0


class _Backoff(AttemptWithBackoff):
    """psycopg-pool's reconnection back-off, capped.

    psycopg-pool waits 1 s after a failed connection attempt and doubles the wait each time
    without limit (until ``reconnect_timeout``, 5 minutes), so a pool came back up to about as
    long after the database as the database had been down (16 s after a 30 s restart). Here the
    waits go 0.25, 0.5, 1, 2, 2, ... s: a pool reconnects within 2 s of the database's return.
    """

    INITIAL_DELAY = _RECONNECT_FIRST_S

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, _RECONNECT_MAX_S)


def _most_recent_first(idle: object) -> None:
    """Move the most recently returned idle connection (the right end of psycopg-pool's deque) to
    the front, where the pool takes the next connection from."""
    if isinstance(idle, deque) and len(idle) > 1:  # pyright: ignore[reportUnknownArgumentType]
        idle.rotate(1)  # pyright: ignore[reportUnknownMemberType]


class _SyncConnectionPool(ConnectionPool[SyncConn]):
    """ConnectionPool with the capped reconnection back-off (``_Backoff``) that hands out the most
    recently used idle connection first (psycopg-pool: the least recently used).

    Reusing the connection that was just returned keeps one server process (with warm caches)
    serving a sequential caller: ~10 % more single sends per second than round-robin over every
    idle connection. The connections left idle are the first the pool shrinks away.
    """

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(
            attempt or _Backoff(timeout=self.reconnect_timeout), growing=growing
        )

    def _get_ready_connection(self, timeout: float | None) -> SyncConn | None:
        _most_recent_first(getattr(self, "_pool", None))
        return super()._get_ready_connection(timeout)


class _AsyncConnectionPool(AsyncConnectionPool[AsyncConn]):
    """AsyncConnectionPool with the capped reconnection back-off (``_Backoff``), most recently used
    idle connection first (see ``_SyncConnectionPool``)."""

    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        await super()._add_connection(
            attempt or _Backoff(timeout=self.reconnect_timeout), growing=growing
        )

    async def _get_ready_connection(self, timeout: float | None) -> AsyncConn | None:
        _most_recent_first(getattr(self, "_pool", None))
        return await super()._get_ready_connection(timeout)


_pool_numbers: Counter[str] = Counter()
_pool_numbers_lock = threading.Lock()


def _pool_name(base: str) -> str:
    """``base``, then ``base-2``, ``base-3``, ... for the pools of later brokers of the process:
    their log lines (and ``_PoolConnectLogFilter``) tell them apart."""
    with _pool_numbers_lock:
        _pool_numbers[base] += 1
        n = _pool_numbers[base]
    return base if n == 1 else f"{base}-{n}"


# -- connection health -----------------------------------------------------------------------------


def has_unread_input(conn: SyncConn | AsyncConn) -> bool:
    """True when the server sent something to a connection nobody is using (zero-timeout poll, no
    round trip): on an idle pooled connection that is the FATAL message and EOF of a terminated
    backend. Also True when the socket is unusable."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, _POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


class _ConnectFailures:
    """The last failed connection attempt of a pool, to explain a pool timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: str | None = None

    def record(self, exc: BaseException) -> None:
        with self._lock:
            self._error = mask_database_url(" ".join(str(exc).split()) or type(exc).__name__)

    def clear(self) -> None:
        with self._lock:
            self._error = None

    def no_connection(self, timeout: float, max_size: int) -> NoConnection:
        """The error for a checkout that got no connection within ``timeout`` seconds."""
        with self._lock:
            error = self._error
        # Cleared by every successful connect: a standing error is the pool's current trouble.
        if error is not None:
            return NoConnection(
                f"database unreachable: no connection within {timeout:g}s;"
                f" last connection attempt: {error}",
                unreachable=True,
            )
        return NoConnection(
            f"no free database connection within {timeout:g}s: all {max_size} connections of the"
            " pool are in use (raise pool_size/max_overflow or pool_timeout)",
            unreachable=False,
        )


def _recording_sync_class(failures: _ConnectFailures) -> type[SyncConn]:
    """A Connection class that reports its connection failures and successes to ``failures``."""

    class RecordingConnection(psycopg.Connection[tuple[Any, ...]]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:  # type: ignore[override]
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                failures.record(exc)
                raise
            failures.clear()
            return conn

    return RecordingConnection


# -- pre-ping --------------------------------------------------------------------------------------


class _IdleTracker:
    """Remembers when each pooled connection was last returned, to pre-ping only idle ones."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()

    def mark(self, conn: object) -> None:
        self._returned[conn] = time.monotonic()

    def needs_ping(self, conn: object) -> bool:
        returned = self._returned.get(conn)
        return returned is None or time.monotonic() - returned > _PRE_PING_IDLE_S


# -- returning connections -------------------------------------------------------------------------

_IDLE: Final = pq.TransactionStatus.IDLE


def _end_transaction_sync(conn: SyncConn, failed: bool) -> None:
    """What leaving ``with conn:`` does on a pooled connection, skipped when there is nothing to
    end (autocommit, idle: the common case)."""
    if conn.closed or conn.pgconn.transaction_status == _IDLE:
        return
    if not failed:
        conn.commit()
        return
    try:
        conn.rollback()
    except Exception as exc:
        _log.warning("error ignored in rollback on %s: %s", conn, exc)


async def _end_transaction_async(conn: AsyncConn, failed: bool) -> None:
    if conn.closed or conn.pgconn.transaction_status == _IDLE:
        return
    if not failed:
        await conn.commit()
        return
    try:
        await conn.rollback()
    except Exception as exc:
        _log.warning("error ignored in rollback on %s: %s", conn, exc)


# -- sync pool -------------------------------------------------------------------------------------


class SyncPool:
    """The broker's sync connection pool, opened on first use (re-created after ``fork``)."""

    def __init__(self, config: PostgresConfig) -> None:
        self._config = config
        self._name = _pool_name("horsies-sync")
        self._lock = threading.Lock()
        self._pool: ConnectionPool[SyncConn] | None = None
        self._pid = os.getpid()
        self._idle = _IdleTracker()
        self._closed = False
        self._failures = _ConnectFailures()
        self._connection_class = _recording_sync_class(self._failures)

    def _check(self, conn: SyncConn) -> None:
        if conn.broken or conn.closed:
            raise psycopg.OperationalError("connection is closed")
        if not (self._idle.needs_ping(conn) or has_unread_input(conn)):
            return
        try:
            conn.execute("")
        except psycopg.Error:
            # Its siblings most likely died with it (restart, mass termination): check them all now.
            pool = self._pool
            if pool is not None:
                with contextlib.suppress(Exception):
                    pool.check()
            raise

    def _get_pool(self) -> ConnectionPool[SyncConn]:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if self._pid != os.getpid():
                # Inherited through fork: the pool's threads do not exist here, and closing its
                # connections would terminate the parent's sessions. Abandon it.
                self._pool = None
                self._pid = os.getpid()
            if self._pool is None:
                self._pool = _SyncConnectionPool(
                    self._config.conninfo,
                    connection_class=self._connection_class,
                    check=self._check if self._config.pool_pre_ping else None,
                    open=False,
                    name=self._name,
                    **_pool_kwargs(self._config),
                )
                self._pool.open(wait=False)
            return self._pool

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Generator[SyncConn]:
        """Borrow a connection (autocommit) for the duration of the block.

        Waits at most ``timeout`` seconds (default ``pool_timeout``) for one, then raises
        :class:`~horsies.broker.errors.NoConnection` saying why none came.
        """
        pool, conn = self.getconn(timeout)
        try:
            yield conn
        except BaseException:
            self.putconn(pool, conn, failed=True)
            raise
        self.putconn(pool, conn, failed=False)

    def getconn(self, timeout: float | None = None) -> tuple[ConnectionPool[SyncConn], SyncConn]:
        """Check a connection out (the lean form of :meth:`connection`, for hot paths): the pool
        it came from and the connection; hand both back to :meth:`putconn`."""
        pool = self._get_pool()
        try:
            return pool, pool.getconn(timeout)
        except PoolTimeout:
            wait = pool.timeout if timeout is None else timeout
            raise self._failures.no_connection(wait, pool.max_size) from None

    def putconn(self, pool: ConnectionPool[SyncConn], conn: SyncConn, *, failed: bool) -> None:
        """Return a connection from :meth:`getconn`, as psycopg-pool's ``connection()`` block
        does: an open transaction is committed, or rolled back when ``failed``."""
        try:
            _end_transaction_sync(conn, failed)
        finally:
            # Not a pool `reset` callback: that would return every connection through a worker
            # thread, which costs more than the query.
            self._idle.mark(conn)
            pool.putconn(conn)

    def close(self) -> None:
        """Close the pool and its connections (idempotent)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=_CLOSE_TIMEOUT_S)


# -- async pools -----------------------------------------------------------------------------------


def _tracked_connection_class(
    conns: weakref.WeakSet[AsyncConn], failures: _ConnectFailures
) -> type[AsyncConn]:
    """An AsyncConnection class whose instances add themselves to ``conns`` when created, and
    which reports its connection failures and successes to ``failures``."""

    class TrackedConnection(psycopg.AsyncConnection[tuple[Any, ...]]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            conns.add(self)

        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:  # type: ignore[override]
            try:
                conn = await super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                failures.record(exc)
                raise
            failures.clear()
            return conn

    return TrackedConnection


class _LoopPool:
    """An async pool bound to one event loop, the connections it opened, and the async generator
    that closes it at loop shutdown."""

    def __init__(self, loop: asyncio.AbstractEventLoop, failures: _ConnectFailures) -> None:
        self.loop = loop
        self.pool: AsyncConnectionPool[AsyncConn] | None = None
        self.closer: AsyncGenerator[None, None] | None = None
        self.sentinel: asyncio.Task[None] | None = None
        self.closing = False
        # Every connection the pool opened, registered as soon as it exists (before psycopg-pool
        # configures or stores it), so that they can be closed even when the pool loses one: a
        # cancellation at loop shutdown can land between its connect and its hand-over.
        self.conns: weakref.WeakSet[AsyncConn] = weakref.WeakSet()
        self.connection_class = _tracked_connection_class(self.conns, failures)

    async def close(self) -> None:
        """Close the pool, then any connection it left open."""
        try:
            if self.pool is not None:
                await self.pool.close(timeout=_CLOSE_TIMEOUT_S)
        except asyncio.CancelledError:
            # At loop shutdown asyncio.run has already cancelled the pool's worker tasks, and
            # pool.close() re-raises their cancellation before closing its idle connections.
            # Propagate only a cancellation aimed at us.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                await self._close_connections()
                raise
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in list(self.conns):
            if not conn.closed:
                with contextlib.suppress(Exception):
                    await conn.close()


async def _close_when_cancelled(entry: _LoopPool, forget: Callable[[_LoopPool], None]) -> None:
    """Wait forever; when cancelled (``asyncio.run`` cancels every task before it finalises
    async generators), close the pool then.

    psycopg-pool's background workers treat a cancellation that lands inside a connection attempt
    as a failed attempt and schedule another one, so they survive asyncio.run's task cancellation
    and its wait for the cancelled tasks never ends. Closing the pool at that moment stops the
    workers (and lets the wait end) before our async-generator closer would get its turn.
    """
    try:
        await asyncio.Event().wait()
    finally:
        if not entry.closing:
            forget(entry)
            await _close_entry(entry)


async def _close_at_loop_shutdown(entry: _LoopPool) -> AsyncGenerator[None, None]:
    # Suspended after its first step; the loop's shutdown_asyncgens() (asyncio.run, Runner,
    # pytest-asyncio) or our own close runs the finally, inside the loop, before it closes.
    try:
        yield
    finally:
        _begin_close(entry)
        await entry.close()


class AsyncPools:
    """One AsyncConnectionPool per running event loop, each opened on first use in that loop.

    ``size`` None sizes the pools from the config; a number makes small pools that open one
    connection at first use and at most ``size``: for a sequential hot path, where reusing the same
    connection (and so the same server process, with its caches warm) beats psycopg-pool's
    round-robin over many idle connections.
    """

    def __init__(
        self, config: PostgresConfig, *, name: str = "horsies-async", size: int | None = None
    ) -> None:
        self._config = config
        self._name = _pool_name(name)
        self._size = size
        self._lock = threading.Lock()
        # Ownership: mutated under _lock by any thread; each pool is only used from its own loop.
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._pid = os.getpid()
        self._idle = _IdleTracker()
        self._closed = False
        self._failures = _ConnectFailures()

    async def _check(self, conn: AsyncConn) -> None:
        if conn.broken or conn.closed:
            raise psycopg.OperationalError("connection is closed")
        if not (self._idle.needs_ping(conn) or has_unread_input(conn)):
            return
        try:
            await conn.execute("")
        except psycopg.Error:
            # Its siblings most likely died with it (restart, mass termination): check them all now.
            entry = self._pools.get(asyncio.get_running_loop())
            if entry is not None and entry.pool is not None:
                with contextlib.suppress(Exception):
                    await entry.pool.check()
            raise

    async def _get_pool(self) -> AsyncConnectionPool[AsyncConn]:
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is not None and entry.pool is not None and self._pid == os.getpid():
            return entry.pool
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if self._pid != os.getpid():
                self._pools.clear()
                self._pid = os.getpid()
            for dead in [lp for lp in self._pools if lp.is_closed()]:
                # Closed without finalising async generators: the pool cannot be awaited any more;
                # dropping it lets its connections be closed by garbage collection.
                del self._pools[dead]
            entry = self._pools.get(loop)
            if entry is None:
                entry = _LoopPool(loop, self._failures)
                entry.pool = _AsyncConnectionPool(
                    self._config.conninfo,
                    connection_class=entry.connection_class,
                    check=self._check if self._config.pool_pre_ping else None,
                    open=False,
                    name=self._name,
                    **_pool_kwargs(self._config, self._size),
                )
                self._pools[loop] = entry
                created = True
            else:
                created = False
        pool = entry.pool
        assert pool is not None
        if created:
            await pool.open(wait=False)
            closer = _close_at_loop_shutdown(entry)
            await anext(closer)
            entry.closer = closer
            entry.sentinel = loop.create_task(
                _close_when_cancelled(entry, self._forget), name=f"{self._name}-closer"
            )
        return pool

    def _forget(self, entry: _LoopPool) -> None:
        with self._lock:
            if self._pools.get(entry.loop) is entry:
                del self._pools[entry.loop]

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncGenerator[AsyncConn]:
        """Borrow a connection (autocommit) of the current loop's pool for the duration of the
        block; waits at most ``timeout`` seconds (default ``pool_timeout``), then raises
        :class:`~horsies.broker.errors.NoConnection` saying why none came."""
        pool, conn = await self.getconn(timeout)
        try:
            yield conn
        except BaseException:
            await self.putconn(pool, conn, failed=True)
            raise
        await self.putconn(pool, conn, failed=False)

    async def getconn(
        self, timeout: float | None = None
    ) -> tuple[AsyncConnectionPool[AsyncConn], AsyncConn]:
        """Check a connection of the current loop's pool out (the lean form of
        :meth:`connection`): the pool and the connection, both for :meth:`putconn`."""
        pool = await self._get_pool()
        try:
            return pool, await pool.getconn(timeout)
        except PoolTimeout:
            wait = pool.timeout if timeout is None else timeout
            raise self._failures.no_connection(wait, pool.max_size) from None

    async def putconn(
        self, pool: AsyncConnectionPool[AsyncConn], conn: AsyncConn, *, failed: bool
    ) -> None:
        """Return a connection from :meth:`getconn` (see ``SyncPool.putconn``)."""
        try:
            await _end_transaction_async(conn, failed)
        finally:
            self._idle.mark(conn)
            await pool.putconn(conn)

    async def close_current(self) -> None:
        """Close the current loop's pool (call from that loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._pools.pop(loop, None)
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
            if loop.is_running():
                if loop is current:
                    # Called synchronously from inside this loop: schedule, cannot wait.
                    task = loop.create_task(_close_entry(entry))
                    _background.add(task)
                    task.add_done_callback(_background.discard)
                    continue
                future = asyncio.run_coroutine_threadsafe(_close_entry(entry), loop)
                with contextlib.suppress(Exception):
                    future.result(wait_s)
            else:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(_close_entry(entry))


_background: set[asyncio.Task[None]] = set()  # keeps fire-and-forget close tasks referenced


def _begin_close(entry: _LoopPool) -> bool:
    """Mark ``entry`` closing and stop its sentinel task; False if it was already closing."""
    if entry.closing:
        return False
    entry.closing = True
    sentinel, entry.sentinel = entry.sentinel, None
    if sentinel is not None and sentinel is not asyncio.current_task():
        sentinel.cancel()
    return True


async def _close_entry(entry: _LoopPool) -> None:
    if not _begin_close(entry):
        return
    closer, entry.closer = entry.closer, None
    if closer is not None:
        await closer.aclose()
    else:
        await entry.close()
