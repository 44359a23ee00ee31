"""`PostgresBroker`: every database interaction of horsies, sync and async.

Producers use ``enqueue``/``enqueue_calls``/``enqueue_many`` and ``get_result`` (and their
``*_async`` twins; concurrent ``enqueue_async`` calls of one event loop share inserts);
operators use the monitoring methods; the worker uses the batched lifecycle methods
(``finish_and_start_tasks`` on its hot path; ``claim_tasks``, ``start_tasks``, ``finish_tasks`` when
claims need a CLAIMED phase; ``release_claimed``, ``requeue_untracked_running``,
``write_heartbeats``, ``insert_worker_state``, ``reap``) and never writes SQL itself.

Each method builds a sans-IO operation (``horsies.broker.ops``) and hands it to one of two thin
executors: the sync connection pool or the current event loop's async pool. Driver errors become
:class:`~horsies.broker.errors.BrokerError` here, with the password masked. The schema is migrated
on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import psycopg

from horsies.broker import (
    channels,
    claims,
    copy_encoder,
    enqueue,
    exchange,
    finish,
    handback,
    heartbeats,
    ids,
    monitoring,
    prefetch,
    recovery,
    retrieval,
    steps,
    workflow_ops,
)
from horsies.broker.claim_plan import ClaimRequest
from horsies.broker.claims import ClaimedTask
from horsies.broker.enqueue import EnqueueRequest
from horsies.broker.errors import BrokerError, NoConnection, translate_error
from horsies.broker.exchange import TaskExchange
from horsies.broker.finish import TaskOutcome
from horsies.broker.heartbeats import WorkerStateRow
from horsies.broker.listener import NotificationListener, acquire_listener, release_listener
from horsies.broker.migrations import apply_migrations_async, apply_migrations_sync
from horsies.broker.pools import (
    AsyncConn,
    AsyncPools,
    SyncConn,
    SyncPool,
    run_op_async,
    run_op_sync,
    run_step_async,
    run_step_sync,
)
from horsies.broker.prefetch import PrefetchExchange
from horsies.broker.recovery import ReapReport, reap_op
from horsies.broker.sql import monitoring as mon_sql
from horsies.broker.sql import tasks as task_sql
from horsies.broker.waiters import (
    WORKFLOW_DONE_CHANNEL,
    AsyncWaiter,
    ResultWaiters,
    SyncWaiter,
)
from horsies.config import DEFAULT_MAX_PAYLOAD_BYTES, PostgresConfig, RecoveryConfig
from horsies.logs import get_logger
from horsies.results import TaskError, TaskResult

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["PostgresBroker"]

_log = get_logger("broker")
R = TypeVar("R")

_INSERT_ATTEMPTS: Final = 3
"""Attempts of an enqueue or a start whose connection is lost mid-statement (``_insert_failed``,
``start_tasks``)."""
_UNIQUE_VIOLATION: Final = "23505"
_WAIT_RETRY_S: Final = 0.5
"""A result wait re-reads this often while the database is unreachable."""
_MIN_POOL_WAIT_S: Final = 0.1

_wait_deadline: ContextVar[float | None] = ContextVar("horsies_wait_deadline", default=None)
"""``time.monotonic()`` deadline of the result wait running in this thread/task, if any: its
connection checkouts wait no longer than that (instead of ``pool_timeout``)."""


@contextlib.contextmanager
def _deadline(deadline: float | None) -> Generator[None]:
    token = _wait_deadline.set(deadline)
    try:
        yield
    finally:
        _wait_deadline.reset(token)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, BrokerError) and (exc.unreachable or exc.connection_lost)


def _next_wait(plan: retrieval.WaitPlan, trouble: Exception | None) -> float | None:
    """Seconds until the next re-read of a result wait, None at the deadline; raises ``trouble``
    (the last read's error) if the deadline passed while the database was out of reach."""
    wait_s = plan.next_wait(time.monotonic())
    if wait_s is None:
        if trouble is not None:
            raise trouble
        return None
    return wait_s if trouble is None else min(wait_s, _WAIT_RETRY_S)


_NewRows = Sequence[Sequence[Any]] | copy_encoder.TaskBatch
"""New task rows of an insert: values in ``TASK_COPY_COLUMNS`` order, or a ``TaskBatch``."""


def _new_ids(rows: _NewRows) -> list[str]:
    return (
        rows.all_ids() if isinstance(rows, copy_encoder.TaskBatch) else [row[_ID] for row in rows]
    )


def _sent_rows(rows: _NewRows) -> dict[str, list[Any]]:
    """TASK_COUNT_STORED_AS_SENT parameters for new task rows."""
    if isinstance(rows, copy_encoder.TaskBatch):
        return {
            "ids": rows.all_ids(),
            "task_names": [rows.task_name] * len(rows.args),
            "args": rows.args,
            "kwargs": rows.kwargs,
        }
    columns = task_sql.TASK_COPY_COLUMNS
    picked = {
        "ids": columns.index("id"),
        "task_names": columns.index("task_name"),
        "args": columns.index("args"),
        "kwargs": columns.index("kwargs"),
    }
    return {name: [row[index] for row in rows] for name, index in picked.items()}


def _insert_failed(
    exc: BrokerError, lost: BrokerError | None, attempt: int, rows: _NewRows
) -> BrokerError:
    """Decide after a failed insert of new task ``rows``: return the error to remember before
    trying again, or raise.

    Only a connection lost mid-statement is retried: the insert may or may not have committed, and
    the retry tells which (it stores the rows, or hits their ids: ``_stored_as_sent``). Anything
    else raises; when an earlier attempt was lost, the error says the rows may exist.
    """
    if exc.connection_lost and attempt < _INSERT_ATTEMPTS:
        _log.warning("%s; retrying on a new connection", exc)
        return exc
    if lost is None:
        raise exc
    ids = _new_ids(rows)
    raise BrokerError(
        f"{exc} (an earlier attempt lost its connection mid-statement, so the task(s) may have"
        f" been stored: {', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})",
        sqlstate=exc.sqlstate,
        unreachable=exc.unreachable,
        connection_lost=True,
    ) from exc


_ID: Final = task_sql.TASK_COPY_COLUMNS.index("id")
_MAX_COALESCED: Final = 1000
"""Most concurrent sends one coalesced insert carries (``_SendCoalescer``)."""


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


class _SendCoalescer:
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
    connection is lost mid-statement is repeated as one (``_insert_async``: it tells whether the
    lost attempt committed), so its outcome is never unknown and no row is stored twice; when the
    database stays out of reach, every call of the batch gets that error. A caller cancelled before
    its row was taken sends nothing; once taken, its row is stored whether the caller still waits
    or not.
    """

    def __init__(self, broker: PostgresBroker) -> None:
        # No reference to the loop: the broker keeps coalescers in a dict weakly keyed by loop.
        self._broker = broker
        self._queue: deque[_PendingSend] = deque()
        self._direct = 0
        self._flusher: asyncio.Task[None] | None = None

    async def insert(self, row: tuple[Any, ...]) -> None:
        """Insert one task row (``enqueue.task_row``); returns once it is committed."""
        if not self._direct and self._flusher is None:
            self._direct += 1
            try:
                await self._broker._insert_async(enqueue.task_insert_step(row), (row,), "enqueue")  # pyright: ignore[reportPrivateUsage]
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
        insert = (
            enqueue.task_insert_step(rows[0]) if len(rows) == 1 else enqueue.insert_rows_query(rows)
        )
        try:
            await self._broker._insert_async(insert, rows, "enqueue")  # pyright: ignore[reportPrivateUsage]
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


_STEPS: Final = (steps.Prepared, steps.Query, steps.Pipeline, steps.Copy, steps.CopyData)


def _run_on_sync(conn: SyncConn, op: steps.Op[Any] | steps.Step, echo: bool) -> Any:
    if isinstance(op, _STEPS):
        return run_step_sync(conn, op, echo)
    return run_op_sync(conn, op, echo=echo)


async def _run_on_async(conn: AsyncConn, op: steps.Op[Any] | steps.Step, echo: bool) -> Any:
    if isinstance(op, _STEPS):
        return await run_step_async(conn, op, echo)
    return await run_op_async(conn, op, echo=echo)


class PostgresBroker:
    """The PostgreSQL broker of one app (obtain it with ``app.broker`` / ``app.get_broker()``).

    Construction does no I/O; pools and the notification listener open on first use. Sync methods
    (``enqueue``, ``get_result``, ``*_sync``) may be called from any thread, also from inside a
    running event loop (they block it: prefer the async twins there). Async methods use a pool bound
    to the running loop. Call :meth:`close` (or ``await`` :meth:`close_async`) when done.
    """

    def __init__(self, config: PostgresConfig, *, app: Horsies | None = None) -> None:
        self._config = config
        self._app = app
        self._sync_pool = SyncPool(config)
        self._async_pools = AsyncPools(config)
        # finish_and_start_tasks, the worker's hot path, runs one call after another on a pool of
        # its own with one connection: always the same server process, with warm caches, instead
        # of psycopg-pool's round-robin over all idle connections (measured on the drain
        # benchmark: about a quarter more tasks/s and a quarter less database CPU per task).
        self._hot_pools = AsyncPools(config, name="horsies-async-hot", size=1)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._listener_lock = threading.Lock()
        self._listener: NotificationListener | None = None
        self._waiters = ResultWaiters(self._get_listener)
        self._workflow_waiters = ResultWaiters(self._get_listener, WORKFLOW_DONE_CHANNEL)
        self._coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SendCoalescer] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False

    # -- properties --------------------------------------------------------------------------------

    @property
    def config(self) -> PostgresConfig:
        """The `PostgresConfig` this broker connects with."""
        return self._config

    @property
    def app(self) -> Horsies | None:
        """The owning app (needed by workflow features that re-import definitions); may be None."""
        return self._app

    @app.setter
    def app(self, value: Horsies | None) -> None:
        self._app = value

    @property
    def max_payload_bytes(self) -> int | None:
        """Limit on a task's encoded arguments: the app's ``AppConfig.max_payload_bytes``, the
        default 16 MiB for a broker without an app."""
        app = self._app
        return DEFAULT_MAX_PAYLOAD_BYTES if app is None else app.config.max_payload_bytes

    @property
    def listener(self) -> NotificationListener:
        """The process's shared LISTEN connection for this database (started on first access)."""
        return self._get_listener()

    def _get_listener(self) -> NotificationListener:
        with self._listener_lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if self._listener is None:
                self._listener = acquire_listener(self._config.conninfo)
            return self._listener

    def __repr__(self) -> str:
        return f"PostgresBroker({self._config.masked_url})"

    # -- executors ---------------------------------------------------------------------------------

    @overload
    def _run_sync(
        self, op: steps.Op[steps.T], *, action: str, transaction: bool = False
    ) -> steps.T: ...

    @overload
    def _run_sync(
        self, op: steps.Step, *, action: str, transaction: bool = False
    ) -> steps.QueryResult: ...

    def _run_sync(
        self, op: steps.Op[Any] | steps.Step, *, action: str, transaction: bool = False
    ) -> Any:
        """Run an operation, or a single step (no generator to drive), on a pooled connection."""
        try:
            if not self._schema_ready:
                self._ensure_schema_sync()
            sync_pool = self._sync_pool
            pool, conn = sync_pool.getconn(self._pool_wait())
            failed = True
            try:
                echo = self._config.echo
                if transaction:
                    with conn.transaction():
                        result = _run_on_sync(conn, op, echo)
                else:
                    result = _run_on_sync(conn, op, echo)
                failed = False
            finally:
                sync_pool.putconn(pool, conn, failed=failed)
            return result
        except psycopg.Error as exc:
            raise translate_error(exc, action) from exc
        finally:
            if not isinstance(op, _STEPS):
                op.close()

    @overload
    async def _run_async(
        self, op: steps.Op[steps.T], *, action: str, transaction: bool = False, hot: bool = False
    ) -> steps.T: ...

    @overload
    async def _run_async(
        self, op: steps.Step, *, action: str, transaction: bool = False, hot: bool = False
    ) -> steps.QueryResult: ...

    async def _run_async(
        self,
        op: steps.Op[Any] | steps.Step,
        *,
        action: str,
        transaction: bool = False,
        hot: bool = False,
    ) -> Any:
        """Async twin of :meth:`_run_sync` (``hot``: on the one-connection hot pool)."""
        try:
            if not self._schema_ready:
                await self._ensure_schema_async()
            pools = self._hot_pools if hot else self._async_pools
            pool, conn = await pools.getconn(self._pool_wait())
            failed = True
            try:
                echo = self._config.echo
                if transaction:
                    async with conn.transaction():
                        result = await _run_on_async(conn, op, echo)
                else:
                    result = await _run_on_async(conn, op, echo)
                failed = False
            finally:
                await pools.putconn(pool, conn, failed=failed)
            return result
        except psycopg.Error as exc:
            raise translate_error(exc, action) from exc
        finally:
            if not isinstance(op, _STEPS):
                op.close()

    def _pool_wait(self) -> float | None:
        """How long a checkout may wait: ``pool_timeout``, or less inside a result wait whose
        deadline comes first."""
        deadline = _wait_deadline.get()
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        return max(_MIN_POOL_WAIT_S, min(float(self._config.pool_timeout), remaining))

    def _insert_sync(
        self,
        insert: steps.Step | Callable[[], steps.Op[Any]],
        rows: _NewRows,
        action: str,
        *,
        transaction: bool = False,
    ) -> None:
        """Run an insert of new task ``rows`` (``enqueue``/``enqueue_many``; ``insert`` is the step,
        or makes the op) so that its outcome is never unknown: a connection lost mid-statement is
        retried (``_insert_failed``)."""
        lost: BrokerError | None = None
        for attempt in range(1, _INSERT_ATTEMPTS + 1):
            try:
                step = insert if isinstance(insert, _STEPS) else insert()
                self._run_sync(step, action=action, transaction=transaction)
                return
            except BrokerError as exc:
                if lost is not None and exc.sqlstate == _UNIQUE_VIOLATION:
                    try:
                        stored = self._stored_as_sent_sync(_sent_rows(rows))
                    except BrokerError as check_exc:
                        # The check lost its connection too: one more attempt tells again.
                        lost = _insert_failed(check_exc, lost, attempt, rows)
                        continue
                    if stored:
                        return  # the lost attempt had committed
                    raise  # the id belongs to another task: nothing of ours was stored
                lost = _insert_failed(exc, lost, attempt, rows)

    async def _insert_async(
        self,
        insert: steps.Step | Callable[[], steps.Op[Any]],
        rows: _NewRows,
        action: str,
        *,
        transaction: bool = False,
    ) -> None:
        """Async twin of :meth:`_insert_sync`."""
        lost: BrokerError | None = None
        for attempt in range(1, _INSERT_ATTEMPTS + 1):
            try:
                step = insert if isinstance(insert, _STEPS) else insert()
                await self._run_async(step, action=action, transaction=transaction)
                return
            except BrokerError as exc:
                if lost is not None and exc.sqlstate == _UNIQUE_VIOLATION:
                    try:
                        stored = await self._stored_as_sent_async(_sent_rows(rows))
                    except BrokerError as check_exc:
                        lost = _insert_failed(check_exc, lost, attempt, rows)
                        continue
                    if stored:
                        return  # the lost attempt had committed
                    raise  # the id belongs to another task: nothing of ours was stored
                lost = _insert_failed(exc, lost, attempt, rows)

    def _coalescer(self) -> _SendCoalescer:
        """The current event loop's ``_SendCoalescer``."""
        loop = asyncio.get_running_loop()
        coalescer = self._coalescers.get(loop)
        if coalescer is None:
            coalescer = self._coalescers[loop] = _SendCoalescer(self)
        return coalescer

    def _stored_as_sent_sync(self, sent: Mapping[str, list[Any]]) -> bool:
        res = self._run_sync(
            steps.run_query(steps.Query(task_sql.TASK_COUNT_STORED_AS_SENT, dict(sent))),
            action="enqueue check",
        )
        return bool(res.rows) and res.rows[0][0] == len(sent["ids"])

    async def _stored_as_sent_async(self, sent: Mapping[str, list[Any]]) -> bool:
        res = await self._run_async(
            steps.run_query(steps.Query(task_sql.TASK_COUNT_STORED_AS_SENT, dict(sent))),
            action="enqueue check",
        )
        return bool(res.rows) and res.rows[0][0] == len(sent["ids"])

    # -- schema ------------------------------------------------------------------------------------

    def _ensure_schema_sync(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._sync_pool.connection(self._pool_wait()) as conn:
                apply_migrations_sync(conn)
            self._schema_ready = True

    async def _ensure_schema_async(self) -> None:
        if self._schema_ready:
            return
        # Concurrent first calls may both migrate: harmless, the advisory lock serialises them.
        async with self._async_pools.connection(self._pool_wait()) as conn:
            await apply_migrations_async(conn)
        self._schema_ready = True

    def ensure_schema_initialized_sync(self) -> None:
        """Create or upgrade the schema now (otherwise done on first use). Idempotent,
        concurrency-safe."""
        try:
            self._ensure_schema_sync()
        except psycopg.Error as exc:
            raise translate_error(exc, "schema initialisation") from exc

    async def ensure_schema_initialized(self) -> None:
        """Async twin of :meth:`ensure_schema_initialized_sync`."""
        try:
            await self._ensure_schema_async()
        except psycopg.Error as exc:
            raise translate_error(exc, "schema initialisation") from exc

    # -- enqueue -----------------------------------------------------------------------------------

    def enqueue(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue_name: str = "default",
        *,
        priority: int = 100,
        sent_at: datetime | None = None,
        good_until: datetime | None = None,
        task_options: str | None = None,
        max_retries: int = 0,
        task_id: str | None = None,
    ) -> str:
        """Insert one PENDING task and return its id (one INSERT; the trigger wakes the workers).

        Low level: no queue validation (use ``task.send()``). ``sent_at`` None means now; a future
        ``sent_at`` delays claiming. Raises SerializationError for arguments the codec cannot encode
        (before touching the database) and BrokerError for database failures.

        Waits up to ``pool_timeout`` for a connection while the database is unreachable (then
        BrokerError, ``unreachable``: nothing was stored). An insert whose connection is lost
        mid-statement is repeated on a new connection, which tells whether it had committed, so a
        returned id is always stored and an error normally means nothing was.
        """
        row = enqueue.task_row(
            task_id or ids.new_task_id(),
            task_name,
            args,
            kwargs,
            queue_name=queue_name,
            priority=priority,
            sent_at=sent_at,
            good_until=good_until,
            max_retries=max_retries,
            task_options=task_options,
            max_payload_bytes=self.max_payload_bytes,
        )
        self._insert_sync(enqueue.task_insert_step(row), (row,), "enqueue")
        return row[_ID]

    async def enqueue_async(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue_name: str = "default",
        *,
        priority: int = 100,
        sent_at: datetime | None = None,
        good_until: datetime | None = None,
        task_options: str | None = None,
        max_retries: int = 0,
        task_id: str | None = None,
    ) -> str:
        """Async twin of :meth:`enqueue`.

        Concurrent calls in one event loop share round trips: while one insert is in flight, the
        calls that arrive meanwhile are inserted together by the next statement (see
        ``_SendCoalescer``). Each call still returns only once its own task is stored, and fails
        only for its own reasons.
        """
        row = enqueue.task_row(
            task_id or ids.new_task_id(),
            task_name,
            args,
            kwargs,
            queue_name=queue_name,
            priority=priority,
            sent_at=sent_at,
            good_until=good_until,
            max_retries=max_retries,
            task_options=task_options,
            max_payload_bytes=self.max_payload_bytes,
        )
        await self._coalescer().insert(row)
        return row[_ID]

    def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[str]:
        """Insert a batch of PENDING tasks with one COPY; returns their ids in request order.

        Prefer it over a loop of :meth:`enqueue` for more than a handful of tasks. Tasks of the
        batch without ``sent_at`` are claimed in request order (within a priority). All or nothing.
        """
        if not requests:
            return []
        ids, rows = enqueue.enqueue_many_rows(requests, self.max_payload_bytes)
        self._insert_sync(
            lambda: enqueue.enqueue_many_op(rows), rows, "enqueue_many", transaction=True
        )
        return ids

    def enqueue_calls(
        self,
        task_name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any] | None]],
        queue_name: str = "default",
        *,
        priority: int = 100,
        good_until: datetime | None = None,
        task_options: str | None = None,
        max_retries: int = 0,
    ) -> list[str]:
        """Insert one PENDING task of ``task_name`` per (args, kwargs) call with one COPY; returns
        their ids in call order (``task.send_many``'s path; low level like :meth:`enqueue`).

        Every call is encoded before anything is written (SerializationError), then the whole batch
        is inserted or none of it. The tasks are claimed in call order (within a priority). Cheaper
        per task than :meth:`enqueue_many`: the rows share everything but their arguments.
        """
        if not calls:
            return []
        batch = enqueue.encode_calls(
            task_name,
            calls,
            queue_name=queue_name,
            priority=priority,
            good_until=good_until,
            max_retries=max_retries,
            task_options=task_options,
            max_payload_bytes=self.max_payload_bytes,
        )
        self._insert_sync(
            lambda: enqueue.task_batch_op(batch), batch, "enqueue_many", transaction=True
        )
        return batch.all_ids()

    async def enqueue_calls_async(
        self,
        task_name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any] | None]],
        queue_name: str = "default",
        *,
        priority: int = 100,
        good_until: datetime | None = None,
        task_options: str | None = None,
        max_retries: int = 0,
    ) -> list[str]:
        """Async twin of :meth:`enqueue_calls`."""
        if not calls:
            return []
        batch = enqueue.encode_calls(
            task_name,
            calls,
            queue_name=queue_name,
            priority=priority,
            good_until=good_until,
            max_retries=max_retries,
            task_options=task_options,
            max_payload_bytes=self.max_payload_bytes,
        )
        await self._insert_async(
            lambda: enqueue.task_batch_op(batch), batch, "enqueue_many", transaction=True
        )
        return batch.all_ids()

    async def enqueue_many_async(self, requests: Sequence[EnqueueRequest]) -> list[str]:
        """Async twin of :meth:`enqueue_many`."""
        if not requests:
            return []
        ids, rows = enqueue.enqueue_many_rows(requests, self.max_payload_bytes)
        await self._insert_async(
            lambda: enqueue.enqueue_many_op(rows), rows, "enqueue_many", transaction=True
        )
        return ids

    # -- results (02 §5) ---------------------------------------------------------------------------

    def _read_result_sync(self, task_id: str) -> Sequence[Any] | None:
        res = self._run_sync(
            steps.run_query(retrieval.get_result_query(task_id)), action="get_result"
        )
        return res.rows[0] if res.rows else None

    async def _read_result_async(self, task_id: str) -> Sequence[Any] | None:
        res = await self._run_async(
            steps.run_query(retrieval.get_result_query(task_id)), action="get_result"
        )
        return res.rows[0] if res.rows else None

    def _wait_sync(
        self,
        waiters: ResultWaiters,
        key: str,
        read_final: Callable[[], R | None],
        plan: retrieval.WaitPlan,
        on_notified: Callable[[], R] | None = None,
    ) -> R | None:
        """Return ``read_final()``'s first non-None value, re-read after each notification for
        ``key`` (or every few seconds); None at the deadline. ``on_notified`` decides the outcome
        after a notification instead of waiting on.

        Connection checkouts wait no longer than the deadline. The first read's errors propagate;
        once waiting, a read that fails because the database is unreachable or the connection was
        lost is retried until the deadline (a restart or a cut connection does not end the wait;
        the listener's reconnect pokes the waiter to re-read at once), and its error is raised
        only if the deadline passes while the database is still out of reach.
        """
        with _deadline(plan.deadline):
            if not waiters.listening():
                # Maybe no need to listen at all; once listening, the read after registering
                # is the only one needed.
                final = read_final()
                if final is not None:
                    return final
            waiter = SyncWaiter(key)
            waiters.register(waiter)
            try:
                waiters.wait_listening()
                while True:
                    trouble: Exception | None = None
                    try:
                        final = read_final()
                    except Exception as exc:
                        if not _is_transient(exc):
                            raise
                        trouble, final = exc, None
                    if final is not None:
                        return final
                    wait_s = _next_wait(plan, trouble)
                    if wait_s is None:
                        return None
                    if waiter.wait(wait_s) == "notified" and on_notified is not None:
                        try:
                            return on_notified()
                        except Exception as exc:
                            if not _is_transient(exc):
                                raise
            finally:
                waiters.unregister(waiter)

    async def _wait_async(
        self,
        waiters: ResultWaiters,
        key: str,
        read_final: Callable[[], Awaitable[R | None]],
        plan: retrieval.WaitPlan,
        on_notified: Callable[[], Awaitable[R]] | None = None,
    ) -> R | None:
        """Async twin of :meth:`_wait_sync`."""
        with _deadline(plan.deadline):
            if not waiters.listening():
                final = await read_final()
                if final is not None:
                    return final
            waiter = AsyncWaiter(key)
            waiters.register(waiter)
            try:
                await waiters.wait_listening_async()
                while True:
                    trouble: Exception | None = None
                    try:
                        final = await read_final()
                    except Exception as exc:
                        if not _is_transient(exc):
                            raise
                        trouble, final = exc, None
                    if final is not None:
                        return final
                    wait_s = _next_wait(plan, trouble)
                    if wait_s is None:
                        return None
                    if await waiter.wait(wait_s) == "notified" and on_notified is not None:
                        try:
                            return await on_notified()
                        except Exception as exc:
                            if not _is_transient(exc):
                                raise
            finally:
                waiters.unregister(waiter)

    def get_result(self, task_id: str, timeout_ms: int | None = None) -> TaskResult[Any, TaskError]:
        """Wait for a task's result and return it; never raises (02 §5).

        ``timeout_ms`` None or 0 waits forever; on timeout the result is err WAIT_TIMEOUT. Other
        outcomes: the task's own result, TASK_NOT_FOUND, TASK_CANCELLED, BROKER_ERROR. Woken by the
        task's ``task_done`` notification; re-reads at least every 5 s as a fallback. Does not hold
        a pooled connection while waiting.
        """
        try:
            final = self._wait_sync(
                self._waiters,
                task_id,
                lambda: retrieval.result_from_row(task_id, self._read_result_sync(task_id)),
                retrieval.WaitPlan(timeout_ms, time.monotonic()),
                lambda: retrieval.result_after_notification(
                    task_id, self._read_result_sync(task_id), timeout_ms
                ),
            )
        except Exception as exc:
            return retrieval.broker_error(task_id, timeout_ms, exc)
        return final if final is not None else retrieval.wait_timeout(task_id, timeout_ms)

    async def get_result_async(
        self, task_id: str, timeout_ms: int | None = None
    ) -> TaskResult[Any, TaskError]:
        """Async twin of :meth:`get_result` (only ``asyncio.CancelledError`` propagates)."""

        async def read_final() -> TaskResult[Any, TaskError] | None:
            return retrieval.result_from_row(task_id, await self._read_result_async(task_id))

        async def after_notification() -> TaskResult[Any, TaskError]:
            row = await self._read_result_async(task_id)
            return retrieval.result_after_notification(task_id, row, timeout_ms)

        try:
            final = await self._wait_async(
                self._waiters,
                task_id,
                read_final,
                retrieval.WaitPlan(timeout_ms, time.monotonic()),
                after_notification,
            )
        except Exception as exc:
            return retrieval.broker_error(task_id, timeout_ms, exc)
        return final if final is not None else retrieval.wait_timeout(task_id, timeout_ms)

    # -- workflows (spec 03) -----------------------------------------------------------------------

    def execute(self, op: steps.Op[steps.T], *, action: str, transaction: bool = False) -> steps.T:
        """Run a sans-IO operation (``horsies.broker.ops`` / ``workflow_ops``) on the sync pool.

        The extension point the workflow API uses; driver errors become ``BrokerError``.
        """
        return self._run_sync(op, action=action, transaction=transaction)

    async def execute_async(
        self, op: steps.Op[steps.T], *, action: str, transaction: bool = False
    ) -> steps.T:
        """Async twin of :meth:`execute`."""
        return await self._run_async(op, action=action, transaction=transaction)

    def wait_workflow(
        self, workflow_id: str, timeout_ms: int | None = None
    ) -> TaskResult[Any, TaskError]:
        """Wait until a workflow is terminal or PAUSED and return its outcome (03 §15 ``get``);
        raises ``ValueError`` for an unknown id."""
        final = self._wait_sync(
            self._workflow_waiters,
            workflow_id,
            lambda: self.execute(workflow_ops.outcome_op(workflow_id), action="workflow_get"),
            retrieval.WaitPlan(timeout_ms, time.monotonic()),
        )
        return final if final is not None else workflow_ops.wait_timeout(timeout_ms)

    async def wait_workflow_async(
        self, workflow_id: str, timeout_ms: int | None = None
    ) -> TaskResult[Any, TaskError]:
        """Async twin of :meth:`wait_workflow`."""

        async def read_final() -> TaskResult[Any, TaskError] | None:
            return await self.execute_async(
                workflow_ops.outcome_op(workflow_id), action="workflow_get"
            )

        final = await self._wait_async(
            self._workflow_waiters,
            workflow_id,
            read_final,
            retrieval.WaitPlan(timeout_ms, time.monotonic()),
        )
        return final if final is not None else workflow_ops.wait_timeout(timeout_ms)

    # -- monitoring (06 §1, D39) -------------------------------------------------------------------

    async def get_stale_tasks(self, stale_threshold_minutes: int = 2) -> list[dict[str, Any]]:
        """RUNNING tasks whose latest runner heartbeat (or start) is older than N minutes."""
        return await self._run_async(
            monitoring.stale_tasks_op(stale_threshold_minutes), action="get_stale_tasks"
        )

    def get_stale_tasks_sync(self, stale_threshold_minutes: int = 2) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_stale_tasks`."""
        return self._run_sync(
            monitoring.stale_tasks_op(stale_threshold_minutes), action="get_stale_tasks"
        )

    async def get_worker_stats(self) -> list[dict[str, Any]]:
        """RUNNING tasks per executing child process (hostname, pid, name), busiest first."""
        return await self._run_async(
            monitoring.dict_rows(mon_sql.MONITOR_WORKER_STATS), action="get_worker_stats"
        )

    def get_worker_stats_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_worker_stats`."""
        return self._run_sync(
            monitoring.dict_rows(mon_sql.MONITOR_WORKER_STATS), action="get_worker_stats"
        )

    async def get_expired_tasks(self) -> list[dict[str, Any]]:
        """PENDING tasks past their ``good_until`` (they will never be claimed)."""
        return await self._run_async(
            monitoring.dict_rows(mon_sql.MONITOR_EXPIRED_TASKS), action="get_expired_tasks"
        )

    def get_expired_tasks_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_expired_tasks`."""
        return self._run_sync(
            monitoring.dict_rows(mon_sql.MONITOR_EXPIRED_TASKS), action="get_expired_tasks"
        )

    async def get_queue_stats(self) -> list[dict[str, Any]]:
        """Per queue: pending, claimed, running, completed, failed, cancelled counts and
        oldest_pending_at."""
        return await self._run_async(
            monitoring.dict_rows(mon_sql.MONITOR_QUEUE_STATS), action="get_queue_stats"
        )

    def get_queue_stats_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_queue_stats`."""
        return self._run_sync(
            monitoring.dict_rows(mon_sql.MONITOR_QUEUE_STATS), action="get_queue_stats"
        )

    async def get_worker_states(self, max_age_s: float = 30) -> list[dict[str, Any]]:
        """The latest snapshot (``horsies_worker_states`` row) of every worker seen in the last
        max_age_s."""
        return await self._run_async(
            monitoring.dict_rows(mon_sql.MONITOR_WORKER_STATES, {"max_age_s": max_age_s}),
            action="get_worker_states",
        )

    def get_worker_states_sync(self, max_age_s: float = 30) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_worker_states`."""
        return self._run_sync(
            monitoring.dict_rows(mon_sql.MONITOR_WORKER_STATES, {"max_age_s": max_age_s}),
            action="get_worker_states",
        )

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        """The ``horsies_tasks`` row of a task as a dict, or None."""
        return await self._run_async(monitoring.get_task_op(task_id), action="get_task")

    def get_task_sync(self, task_id: str) -> dict[str, Any] | None:
        """Sync twin of :meth:`get_task`."""
        return self._run_sync(monitoring.get_task_op(task_id), action="get_task")

    async def mark_stale_tasks_as_failed(self, stale_threshold_ms: int = 300_000) -> int:
        """Fail every RUNNING task without a runner heartbeat for ``stale_threshold_ms``
        (WORKER_CRASHED, as the reaper does but without retrying: an explicit operator action).
        Returns rows failed."""
        failed, _ = await self._run_async(
            recovery.fail_stale_running_op(stale_threshold_ms, allow_retry=False, max_batches=None),
            action="mark_stale_tasks_as_failed",
            transaction=True,
        )
        return failed

    def mark_stale_tasks_as_failed_sync(self, stale_threshold_ms: int = 300_000) -> int:
        """Sync twin of :meth:`mark_stale_tasks_as_failed`."""
        failed, _ = self._run_sync(
            recovery.fail_stale_running_op(stale_threshold_ms, allow_retry=False, max_batches=None),
            action="mark_stale_tasks_as_failed",
            transaction=True,
        )
        return failed

    async def requeue_stale_claimed(self, stale_threshold_ms: int = 120_000) -> int:
        """Return CLAIMED tasks whose claimer stopped heartbeating to PENDING; returns rows
        requeued."""
        return await self._run_async(
            recovery.requeue_stale_claimed_op(stale_threshold_ms),
            action="requeue_stale_claimed",
            transaction=True,
        )

    def requeue_stale_claimed_sync(self, stale_threshold_ms: int = 120_000) -> int:
        """Sync twin of :meth:`requeue_stale_claimed`."""
        return self._run_sync(
            recovery.requeue_stale_claimed_op(stale_threshold_ms),
            action="requeue_stale_claimed",
            transaction=True,
        )

    # -- worker-facing -----------------------------------------------------------------------------

    async def claim_tasks(self, worker_id: str, request: ClaimRequest) -> list[ClaimedTask]:
        """One claim pass in one transaction (04 §5, D31); returns the rows now CLAIMED by
        ``worker_id``, most urgent queue first. Takes the cluster claim lock only when a
        cluster-wide cap applies. In hard-cap mode without such caps prefer
        :meth:`finish_and_start_tasks`, which skips the CLAIMED phase."""
        if request.local_budget <= 0 or not request.queues:
            return []
        return await self._run_async(
            claims.claim_op(worker_id, request), action="claim_tasks", transaction=True
        )

    async def start_tasks(
        self, worker_id: str, hostname: str, starts: Sequence[tuple[str, int]]
    ) -> set[str]:
        """CLAIMED -> RUNNING for (task id, child pid) pairs still owned by ``worker_id`` with a
        valid lease, in one statement; returns the ids actually started (the others were lost).

        A call whose connection is lost mid-statement is repeated on a new connection, counting
        the rows the lost attempt had started, so a started task is never reported lost."""
        if not starts:
            return set()
        for attempt in range(1, _INSERT_ATTEMPTS + 1):
            try:
                return await self._run_async(
                    claims.start_op(worker_id, hostname, starts, resume=attempt > 1),
                    action="start_tasks",
                )
            except BrokerError as exc:
                # Lost mid-statement: it may have committed, and a plain repeat would then find
                # the rows RUNNING and report them lost although nobody runs them. Repeat it in
                # resume mode, which counts the rows this call started.
                if not exc.connection_lost or attempt == _INSERT_ATTEMPTS:
                    raise
                _log.warning("%s; repeating it on a new connection", exc)
        raise AssertionError("unreachable")

    async def finish_tasks(
        self,
        outcomes: Sequence[TaskOutcome],
        *,
        worker_id: str | None,
        notify_capacity: bool = True,
    ) -> set[str]:
        """Persist a batch of outcomes in one statement: COMPLETED/FAILED, or back to PENDING for
        a retry; only rows still RUNNING (for ``worker_id`` when given) change. Returns the ids
        updated.

        ``notify_capacity`` also sends the ``task_new`` 'capacity' wake-up in the same round trip;
        only workers held back by a cluster-wide cap need it, so a worker without such caps passes
        False.
        """
        if not outcomes:
            return set()
        return await self._run_async(
            finish.finish_op(outcomes, worker_id, notify_capacity=notify_capacity, app=self._app),
            action="finish_tasks",
            transaction=any(o.workflow_id is not None for o in outcomes),
        )

    async def finish_and_start_tasks(
        self,
        worker_id: str,
        hostname: str,
        *,
        outcomes: Sequence[TaskOutcome] = (),
        request: ClaimRequest | None = None,
        pids: Sequence[int] = (),
        notify_capacity: bool = False,
        keep_running_ids: Sequence[str] | None = None,
    ) -> TaskExchange:
        """The worker's hot path, in one round trip: write ``outcomes`` (as :meth:`finish_tasks`)
        and claim up to one task per idle child in ``pids``, moving it PENDING -> RUNNING for that
        child at once (no CLAIMED phase), per ``request``'s queues and per-queue batch.

        Only for hard-cap mode without cluster-wide caps (``exchange.can_start_directly``);
        otherwise use :meth:`claim_tasks` + :meth:`start_tasks`. All statements commit together
        or not at all, so after an error nothing was written and the call can simply be repeated,
        except when the connection broke after the commit: then pass every task id this worker
        still runs or has an unwritten outcome for as ``keep_running_ids`` on the next call, and
        this worker's other RUNNING rows (started, but never handed to a child) go back to
        PENDING. Calls on one
        broker run one at a time: they share one connection.
        """
        slots = len(pids) if request is not None and request.local_budget > 0 else 0
        if not outcomes and not slots and keep_running_ids is None:
            return TaskExchange()
        return await self._run_async(
            exchange.exchange_op(
                worker_id,
                hostname,
                outcomes=outcomes,
                request=request if slots else None,
                pids=list(pids)[:slots],
                notify_capacity=notify_capacity,
                keep_running_ids=keep_running_ids,
                app=self._app,
            ),
            action="finish_and_start_tasks",
            hot=True,
            transaction=exchange.exchange_needs_transaction(request, slots, outcomes),
        )

    async def finish_start_and_claim(
        self,
        worker_id: str,
        hostname: str,
        *,
        outcomes: Sequence[TaskOutcome] = (),
        starts: Sequence[tuple[str, int]] = (),
        direct_pids: Sequence[int] = (),
        request: ClaimRequest | None = None,
        release_ids: Sequence[str] = (),
        keep_running_ids: Sequence[str] | None = None,
    ) -> PrefetchExchange:
        """Prefetch mode's hot path (soft cap, no cluster-wide caps), all or nothing and usually
        one round trip: write ``outcomes``, start the claims handed to children (``starts``: (task
        id, child pid)), start tasks straight from PENDING for the other free child slots
        (``direct_pids``: one pid per slot) and claim the rest of ``request.local_budget`` with a
        lease.

        After an error nothing was written, unless the connection broke after the commit: so the
        caller drops the tasks of a failed call's ``starts`` and passes their ids as
        ``release_ids``, with every task it still holds as ``keep_running_ids``, on the next call
        (see ``prefetch.prefetch_exchange_op``). Calls on one broker run one at a time: they share
        one connection.
        """
        return await self._run_async(
            prefetch.prefetch_exchange_op(
                worker_id,
                hostname,
                outcomes=outcomes,
                starts=starts,
                direct_pids=direct_pids,
                request=request,
                release_ids=release_ids,
                keep_running_ids=keep_running_ids,
                app=self._app,
            ),
            action="finish_start_and_claim",
            hot=True,
            transaction=prefetch.prefetch_exchange_needs_transaction(
                request, len(direct_pids), outcomes
            ),
        )

    async def requeue_running(self, worker_id: str, task_ids: Sequence[str]) -> list[str]:
        """Send the named RUNNING rows of ``worker_id`` back to PENDING: tasks it started but no
        child process ever began. Returns the ids requeued."""
        return await self._run_async(
            handback.requeue_running_op(worker_id, task_ids),
            action="requeue_running",
            transaction=True,
        )

    async def requeue_untracked_running(
        self, worker_id: str, keep_running_ids: Sequence[str]
    ) -> list[str]:
        """Send ``worker_id``'s RUNNING rows that are not in ``keep_running_ids`` back to PENDING
        and return their ids (see :meth:`finish_and_start_tasks`). Only the owning worker may call
        it, with every task it still runs or has an unwritten outcome for."""
        return await self._run_async(
            exchange.requeue_untracked_running_op(worker_id, keep_running_ids),
            action="requeue_untracked_running",
        )

    async def release_claimed(self, worker_id: str, task_ids: Sequence[str]) -> int:
        """Give unstarted claims back (CLAIMED by ``worker_id`` -> PENDING); returns how many."""
        if not task_ids:
            return 0
        return await self._run_async(
            handback.release_op(worker_id, task_ids), action="release_claimed", transaction=True
        )

    async def write_heartbeats(
        self,
        worker_id: str,
        hostname: str,
        pid: int,
        claimed_ids: Sequence[str],
        running: Sequence[tuple[str, int]],
    ) -> None:
        """One INSERT of 'claimer' rows (CLAIMED tasks) and 'runner' rows ((task id, child pid)
        pairs)."""
        query = heartbeats.heartbeat_query(worker_id, hostname, pid, claimed_ids, running)
        if query is not None:
            await self._run_async(steps.run_query(query), action="write_heartbeats")

    async def insert_worker_state(self, state: WorkerStateRow) -> None:
        """Insert one worker snapshot into ``horsies_worker_states``."""
        await self._run_async(
            steps.run_query(heartbeats.worker_state_query(state)), action="insert_worker_state"
        )

    async def reap(self, recovery: RecoveryConfig) -> ReapReport:
        """One recovery pass (04 §10, D10), by at most one process of the cluster at a time: stale
        CLAIMED -> PENDING; stale RUNNING -> FAILED with WORKER_CRASHED, or retried when the task
        lists WORKER_CRASHED in auto_retry_for and has retries left."""
        return await self._run_async(reap_op(recovery, self._app), action="reap", transaction=True)

    def reap_sync(self, recovery: RecoveryConfig) -> ReapReport:
        """Sync twin of :meth:`reap`."""
        return self._run_sync(reap_op(recovery, self._app), action="reap", transaction=True)

    async def notify(self, channel: str, payload: str = "") -> None:
        """Send a notification (e.g. a delayed ``retry:<id>`` wake-up on ``task_queue_<q>``)."""
        await self._run_async(
            steps.run_query(channels.notify_query(channel, payload)), action="notify"
        )

    def notify_sync(self, channel: str, payload: str = "") -> None:
        """Sync twin of :meth:`notify`."""
        self._run_sync(steps.run_query(channels.notify_query(channel, payload)), action="notify")

    # -- shutdown ----------------------------------------------------------------------------------

    def _close_common(self) -> None:
        self._waiters.close()
        self._workflow_waiters.close()
        with self._listener_lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            release_listener(listener)
        self._sync_pool.close()

    def close(self) -> None:
        """Close the pools and release the listener (idempotent); async code: prefer close_async."""
        self._close_common()
        self._async_pools.close_all()
        self._hot_pools.close_all()

    async def close_async(self) -> None:
        """Close the current loop's pool, the sync pool and release the listener. Idempotent."""
        await self._async_pools.close_current()
        await self._hot_pools.close_current()
        self._close_common()
        self._async_pools.close_all()
        self._hot_pools.close_all()
