"""`PostgresBroker`: every database interaction of horsies, sync and async.

Producers use ``enqueue``/``enqueue_calls``/``enqueue_many`` and ``get_result`` (each with an
``*_async`` twin; concurrent ``enqueue_async`` calls of one event loop share inserts); operators
use the monitoring methods; the worker uses the batched lifecycle methods (``exchange_async`` on its
hot path, ``prefetch_exchange_async`` in prefetch mode, ``claim_async`` + ``start_async`` +
``finish_async`` when claims need a CLAIMED phase, and the hand-back, heartbeat, snapshot and reaper
calls) and never writes SQL itself.

Every method is a thin door: it builds an operation (``steps.Op``) or a program (``programs``) and
hands it to the sync driver or to the async one, so sync and async share one implementation. Driver
errors become :class:`~horsies.broker.errors.BrokerError`, with the password masked. The schema is
migrated on first use.

Naming: a method ``x`` has its async twin ``x_async``. The five monitoring methods of the
original API (``get_stale_tasks``, ``get_worker_stats``, ``get_expired_tasks``,
``mark_stale_tasks_as_failed``, ``requeue_stale_claimed``), their companions ``get_queue_stats``,
``get_worker_states`` and ``get_task``, and ``ensure_schema_initialized`` are coroutines under
their original names, with sync twins named ``*_sync``: code written for that API keeps working.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString, TypeVar

from horsies.broker import (
    channels,
    claims,
    enqueue,
    exchange,
    finish,
    handback,
    heartbeats,
    monitoring,
    operator_actions,
    prefetch,
    recovery,
    retrieval,
)
from horsies.broker.claim_plan import ClaimRequest
from horsies.broker.claims import ClaimedTask
from horsies.broker.copy_encoder import TaskBatch
from horsies.broker.driver_async import AsyncDriver, AsyncPools
from horsies.broker.driver_sync import SyncDriver, SyncPool
from horsies.broker.enqueue import EnqueueRequest
from horsies.broker.exchange import TaskExchange
from horsies.broker.finish import Finished, TaskOutcome
from horsies.broker.heartbeats import WorkerStateRow
from horsies.broker.hooks import BrokerApp, NodeRef, WorkflowEngine, WorkflowHooks
from horsies.broker.listener import NotificationListener, acquire_listener, release_listener
from horsies.broker.migrations import SchemaGate
from horsies.broker.prefetch import PrefetchExchange
from horsies.broker.programs import Program, Run
from horsies.broker.recovery import ReapReport
from horsies.broker.send_coalescer import SendCoalescer
from horsies.broker.sql import monitoring as mon_sql
from horsies.broker.steps import Op, Step
from horsies.broker.waiters import ResultWaiters
from horsies.config import DEFAULT_MAX_PAYLOAD_BYTES, PostgresConfig, RecoveryConfig
from horsies.results import TaskError, TaskResult

__all__ = ["PostgresBroker"]

T = TypeVar("T")


class PostgresBroker:
    """The PostgreSQL broker of one app (obtain it with ``app.broker`` / ``app.get_broker()``).

    Construction does no I/O; pools and the notification listener open on first use. Sync methods
    may be called from any thread, also from inside a running event loop (they block it: prefer
    the async twins there). Async methods use a pool bound to the running loop. Call :meth:`close`
    (or ``await`` :meth:`close_async`) when done.
    """

    def __init__(
        self,
        config: PostgresConfig,
        *,
        app: BrokerApp | None = None,
        workflows: WorkflowHooks | None = None,
    ) -> None:
        self._config = config
        self._app = app
        self._workflows = workflows
        schema = SchemaGate()
        self._sync = SyncDriver(config, SyncPool(config), schema)
        self._async_pools = AsyncPools(config)
        # The worker's hot path (exchange_async, prefetch_exchange_async) runs one call after
        # another on a pool of its own with one connection: always the same server process, with
        # warm caches (measured on the drain benchmark: about a quarter more tasks/s and a quarter
        # less database CPU per task than taking turns over several connections).
        self._hot_pools = AsyncPools(config, name="horsies-async-hot", size=1)
        self._async = AsyncDriver(config, self._async_pools, self._hot_pools, schema)
        self._listener_lock = threading.Lock()
        self._listener: NotificationListener | None = None
        self._waiters = ResultWaiters(self._get_listener, channels.TASK_DONE)
        self._workflow_waiters = ResultWaiters(self._get_listener, channels.WORKFLOW_DONE)
        self._coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SendCoalescer] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False

    # -- properties --------------------------------------------------------------------------------

    @property
    def config(self) -> PostgresConfig:
        """The `PostgresConfig` this broker connects with."""
        return self._config

    @property
    def app(self) -> BrokerApp | None:
        """The owning app (workflow features run its code: conditions, child workflows); may be
        None."""
        return self._app

    @app.setter
    def app(self, value: BrokerApp | None) -> None:
        self._app = value

    @property
    def workflows(self) -> WorkflowHooks | None:
        """What finishing a workflow task also does for its workflow (the app's broker has the
        workflow store). Without it, workflow tasks still finish, and their workflows advance
        when a worker's reaper reconciles them."""
        return self._workflows

    @workflows.setter
    def workflows(self, value: WorkflowHooks | None) -> None:
        self._workflows = value

    def _engine(self) -> WorkflowEngine | None:
        hooks = self._workflows
        return None if hooks is None else WorkflowEngine(hooks, self._app)

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

    @property
    def workflow_waiters(self) -> ResultWaiters:
        """The waiters of ``workflow_done`` notifications (used by workflow ``get``)."""
        return self._workflow_waiters

    def _get_listener(self) -> NotificationListener:
        with self._listener_lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if self._listener is None:
                self._listener = acquire_listener(self._config.conninfo)
            return self._listener

    def __repr__(self) -> str:
        return f"PostgresBroker({self._config.masked_url})"

    # -- running operations and programs -----------------------------------------------------------

    def execute(self, op: Op[T], *, action: str, transaction: bool = False) -> T:
        """Run a sans-IO operation (``horsies.broker.steps.Op``) on the sync pool; driver errors
        become ``BrokerError``. The door the workflow API and tools use."""
        return self._sync.run(Run(op, action, transaction))

    async def execute_async(self, op: Op[T], *, action: str, transaction: bool = False) -> T:
        """Async twin of :meth:`execute`."""
        return await self._async.run(Run(op, action, transaction))

    def run_program(self, program: Program[T]) -> T:
        """Run a program (``horsies.broker.programs``) for a sync caller."""
        return self._sync.drive(program)

    async def run_program_async(self, program: Program[T]) -> T:
        """Async twin of :meth:`run_program`."""
        return await self._async.drive(program)

    def _run_sync(self, op: Op[T] | Step, action: str, *, transaction: bool = False) -> T:
        return self._sync.run(Run(op, action, transaction))

    async def _run_async(
        self, op: Op[T] | Step, action: str, *, transaction: bool = False, hot: bool = False
    ) -> T:
        return await self._async.run(Run(op, action, transaction, hot))

    # -- schema ------------------------------------------------------------------------------------

    def ensure_schema_initialized_sync(self) -> None:
        """Create or upgrade the schema now (otherwise done on first use). Idempotent,
        concurrency-safe."""
        self._sync.migrate()

    async def ensure_schema_initialized(self) -> None:
        """Async twin of :meth:`ensure_schema_initialized_sync`."""
        await self._async.migrate()

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
        request = EnqueueRequest(
            task_name, args, kwargs, queue_name, priority, sent_at, good_until, task_options,
            max_retries, task_id,
        )  # fmt: skip
        row = enqueue.request_row(request, self.max_payload_bytes)
        self._sync.drive(enqueue.insert_program(enqueue.task_insert_step(row), (row,), "enqueue"))
        return row[0]

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
        calls that arrive meanwhile are inserted together by the next statement. Each call still
        returns only once its own task is stored, and fails only for its own reasons.
        """
        request = EnqueueRequest(
            task_name, args, kwargs, queue_name, priority, sent_at, good_until, task_options,
            max_retries, task_id,
        )  # fmt: skip
        row = enqueue.request_row(request, self.max_payload_bytes)
        await self._coalescer().insert(row)
        return row[0]

    def _coalescer(self) -> SendCoalescer:
        """The current event loop's send coalescer."""
        loop = asyncio.get_running_loop()
        coalescer = self._coalescers.get(loop)
        if coalescer is None:

            async def insert(step: Step, rows: Sequence[tuple[Any, ...]]) -> None:
                await self._async.drive(enqueue.insert_program(step, rows, "enqueue"))

            coalescer = self._coalescers[loop] = SendCoalescer(insert)
        return coalescer

    def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[str]:
        """Insert a batch of PENDING tasks with one COPY; returns their ids in request order.

        Prefer it over a loop of :meth:`enqueue` for more than a handful of tasks. Tasks of the
        batch without ``sent_at`` are claimed in request order (within a priority). All or nothing.
        """
        if not requests:
            return []
        ids, rows = enqueue.enqueue_many_rows(requests, self.max_payload_bytes)
        self._sync.drive(_many(rows))
        return ids

    async def enqueue_many_async(self, requests: Sequence[EnqueueRequest]) -> list[str]:
        """Async twin of :meth:`enqueue_many`."""
        if not requests:
            return []
        ids, rows = enqueue.enqueue_many_rows(requests, self.max_payload_bytes)
        await self._async.drive(_many(rows))
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
            task_name, calls, queue_name=queue_name, priority=priority, good_until=good_until,
            max_retries=max_retries, task_options=task_options,
            max_payload_bytes=self.max_payload_bytes,
        )  # fmt: skip
        self._sync.drive(_batch(batch))
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
            task_name, calls, queue_name=queue_name, priority=priority, good_until=good_until,
            max_retries=max_retries, task_options=task_options,
            max_payload_bytes=self.max_payload_bytes,
        )  # fmt: skip
        await self._async.drive(_batch(batch))
        return batch.all_ids()

    # -- results -----------------------------------------------------------------------------------

    def get_result(self, task_id: str, timeout_ms: int | None = None) -> TaskResult[Any, TaskError]:
        """Wait for a task's result and return it; never raises.

        ``timeout_ms`` None or 0 waits forever; on timeout the result is err WAIT_TIMEOUT. Other
        outcomes: the task's own result, TASK_NOT_FOUND, TASK_CANCELLED, BROKER_ERROR. Woken by the
        task's ``task_done`` notification; re-reads at least every 5 s as a fallback. Does not hold
        a pooled connection while waiting.
        """
        return self._sync.drive(retrieval.result_program(self._waiters, task_id, timeout_ms))

    async def get_result_async(
        self, task_id: str, timeout_ms: int | None = None
    ) -> TaskResult[Any, TaskError]:
        """Async twin of :meth:`get_result` (only ``asyncio.CancelledError`` propagates)."""
        return await self._async.drive(retrieval.result_program(self._waiters, task_id, timeout_ms))

    # -- operator actions on a task ----------------------------------------------------------------

    def cancel_task(self, task_id: str) -> bool:
        """Cancel a task no worker has started; False when it had started, ended or is unknown.
        A workflow task's node ends FAILED with ``TASK_CANCELLED`` and its workflow advances."""
        return self._sync.drive(operator_actions.cancel_task_program(self._engine(), task_id))

    async def cancel_task_async(self, task_id: str) -> bool:
        """Async twin of :meth:`cancel_task`."""
        return await self._async.drive(
            operator_actions.cancel_task_program(self._engine(), task_id)
        )

    def retry_task(self, task_id: str) -> bool:
        """Send an ended (FAILED or CANCELLED) plain task back to PENDING for a fresh run; False
        for a workflow task, a task that has not ended, or an unknown id."""
        return self._run_sync(operator_actions.retry_task_op(task_id), "task_retry")

    async def retry_task_async(self, task_id: str) -> bool:
        """Async twin of :meth:`retry_task`."""
        return await self._run_async(operator_actions.retry_task_op(task_id), "task_retry")

    # -- monitoring --------------------------------------------------------------------------------

    async def get_stale_tasks(self, stale_threshold_minutes: int = 2) -> list[dict[str, Any]]:
        """RUNNING tasks whose latest runner heartbeat (or start) is older than N minutes."""
        return await self._run_async(
            monitoring.stale_tasks_op(stale_threshold_minutes), "get_stale_tasks"
        )

    def get_stale_tasks_sync(self, stale_threshold_minutes: int = 2) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_stale_tasks`."""
        return self._run_sync(monitoring.stale_tasks_op(stale_threshold_minutes), "get_stale_tasks")

    async def get_worker_stats(self) -> list[dict[str, Any]]:
        """RUNNING tasks per executing child process (hostname, pid, name), busiest first."""
        return await self._run_async(_rows(mon_sql.MONITOR_WORKER_STATS), "get_worker_stats")

    def get_worker_stats_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_worker_stats`."""
        return self._run_sync(_rows(mon_sql.MONITOR_WORKER_STATS), "get_worker_stats")

    async def get_expired_tasks(self) -> list[dict[str, Any]]:
        """PENDING tasks past their ``good_until`` (they will never be claimed)."""
        return await self._run_async(_rows(mon_sql.MONITOR_EXPIRED_TASKS), "get_expired_tasks")

    def get_expired_tasks_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_expired_tasks`."""
        return self._run_sync(_rows(mon_sql.MONITOR_EXPIRED_TASKS), "get_expired_tasks")

    async def get_queue_stats(self) -> list[dict[str, Any]]:
        """Per queue: pending, claimed, running, completed, failed, cancelled counts and
        oldest_pending_at."""
        return await self._run_async(_rows(mon_sql.MONITOR_QUEUE_STATS), "get_queue_stats")

    def get_queue_stats_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_queue_stats`."""
        return self._run_sync(_rows(mon_sql.MONITOR_QUEUE_STATS), "get_queue_stats")

    async def get_worker_states(self, max_age_s: float = 30) -> list[dict[str, Any]]:
        """The latest snapshot (``horsies_worker_states`` row) of every worker seen in the last
        max_age_s."""
        return await self._run_async(_worker_states(max_age_s), "get_worker_states")

    def get_worker_states_sync(self, max_age_s: float = 30) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_worker_states`."""
        return self._run_sync(_worker_states(max_age_s), "get_worker_states")

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        """The ``horsies_tasks`` row of a task as a dict, or None."""
        return await self._run_async(monitoring.get_task_op(task_id), "get_task")

    def get_task_sync(self, task_id: str) -> dict[str, Any] | None:
        """Sync twin of :meth:`get_task`."""
        return self._run_sync(monitoring.get_task_op(task_id), "get_task")

    async def mark_stale_tasks_as_failed(self, stale_threshold_ms: int = 300_000) -> int:
        """Fail every RUNNING task without a runner heartbeat for ``stale_threshold_ms``
        (WORKER_CRASHED, as the reaper does but without retrying: an explicit operator action).
        Returns rows failed."""
        failed, _ = await self._run_async(
            _fail_stale(stale_threshold_ms), "mark_stale_tasks_as_failed", transaction=True
        )
        return failed

    def mark_stale_tasks_as_failed_sync(self, stale_threshold_ms: int = 300_000) -> int:
        """Sync twin of :meth:`mark_stale_tasks_as_failed`."""
        failed, _ = self._run_sync(
            _fail_stale(stale_threshold_ms), "mark_stale_tasks_as_failed", transaction=True
        )
        return failed

    async def requeue_stale_claimed(self, stale_threshold_ms: int = 120_000) -> int:
        """Return CLAIMED tasks whose claimer stopped heartbeating to PENDING; returns rows
        requeued."""
        return await self._run_async(
            recovery.requeue_stale_claimed_op(stale_threshold_ms),
            "requeue_stale_claimed",
            transaction=True,
        )

    def requeue_stale_claimed_sync(self, stale_threshold_ms: int = 120_000) -> int:
        """Sync twin of :meth:`requeue_stale_claimed`."""
        return self._run_sync(
            recovery.requeue_stale_claimed_op(stale_threshold_ms),
            "requeue_stale_claimed",
            transaction=True,
        )

    # -- worker-facing -----------------------------------------------------------------------------

    async def claim_async(self, worker_id: str, request: ClaimRequest) -> list[ClaimedTask]:
        """One claim pass in one transaction; returns the rows now CLAIMED by ``worker_id``, most
        urgent queue first. Takes the cluster claim lock only when a cluster-wide cap applies. In
        hard-cap mode without such caps prefer :meth:`exchange_async`, which skips the CLAIMED
        phase."""
        if request.local_budget <= 0 or not request.queues:
            return []
        return await self._run_async(
            claims.claim_op(worker_id, request), "claim_tasks", transaction=True
        )

    async def start_async(
        self, worker_id: str, hostname: str, starts: Sequence[tuple[str, int]]
    ) -> set[str]:
        """CLAIMED -> RUNNING for (task id, child pid) pairs still owned by ``worker_id`` with a
        valid lease, in one statement; returns the ids actually started (the others were lost).
        A started task is never reported lost, even when the connection is lost mid-statement."""
        if not starts:
            return set()
        return await self._async.drive(claims.start_program(worker_id, hostname, starts))

    async def finish_async(
        self,
        outcomes: Sequence[TaskOutcome],
        *,
        worker_id: str | None,
        notify_capacity: bool = True,
    ) -> Finished:
        """Persist a batch of outcomes in one statement: COMPLETED/FAILED, or back to PENDING for
        a retry; only rows still RUNNING (for ``worker_id`` when given) change. Returns the ids
        updated and the workflow nodes left for :meth:`decide_async`.

        ``notify_capacity`` also sends the ``task_new`` 'capacity' wake-up in the same round trip;
        only workers held back by a cluster-wide cap need it, so a worker without such caps passes
        False.
        """
        if not outcomes:
            return Finished()
        return await self._run_async(
            finish.finish_op(
                outcomes, worker_id, notify_capacity=notify_capacity, engine=self._engine()
            ),
            "finish_tasks",
            transaction=any(o.workflow_id is not None for o in outcomes),
        )

    async def exchange_async(
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
        """The worker's hot path, in one round trip: write ``outcomes`` (as :meth:`finish_async`)
        and claim up to one task per idle child in ``pids``, moving it PENDING -> RUNNING for that
        child at once (no CLAIMED phase), per ``request``'s queues and per-queue batch.

        Only for hard-cap mode without cluster-wide caps (``exchange.can_start_directly``);
        otherwise use :meth:`claim_async` + :meth:`start_async`. All statements commit together
        or not at all, so after an error nothing was written and the call can simply be repeated,
        except when the connection broke after the commit: then pass every task id this worker
        still runs or has an unwritten outcome for as ``keep_running_ids`` on the next call, and
        this worker's other RUNNING rows (started, but never handed to a child) go back to
        PENDING. Calls on one broker run one at a time: they share one connection.
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
                engine=self._engine(),
            ),
            "exchange",
            hot=True,
            transaction=exchange.exchange_needs_transaction(request, slots, outcomes),
        )

    async def prefetch_exchange_async(
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
                engine=self._engine(),
            ),
            "prefetch_exchange",
            hot=True,
            transaction=prefetch.prefetch_exchange_needs_transaction(
                request, len(direct_pids), outcomes
            ),
        )

    async def requeue_running_async(self, worker_id: str, task_ids: Sequence[str]) -> list[str]:
        """Send the named RUNNING rows of ``worker_id`` back to PENDING: tasks it started but no
        child process ever began. Returns the ids requeued."""
        return await self._run_async(
            handback.requeue_running_op(worker_id, task_ids), "requeue_running", transaction=True
        )

    async def requeue_untracked_async(
        self, worker_id: str, keep_running_ids: Sequence[str]
    ) -> list[str]:
        """Send ``worker_id``'s RUNNING rows that are not in ``keep_running_ids`` back to PENDING
        and return their ids (see :meth:`exchange_async`). Only the owning worker may call it,
        with every task it still runs or has an unwritten outcome for."""
        return await self._run_async(
            exchange.requeue_untracked_running_op(worker_id, keep_running_ids),
            "requeue_untracked_running",
        )

    async def release_claimed_async(self, worker_id: str, task_ids: Sequence[str]) -> int:
        """Give unstarted claims back (CLAIMED by ``worker_id`` -> PENDING); returns how many."""
        if not task_ids:
            return 0
        return await self._run_async(
            handback.release_op(worker_id, task_ids), "release_claimed", transaction=True
        )

    async def write_heartbeats_async(
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
            await self._run_async(query, "write_heartbeats")

    async def insert_worker_state_async(self, state: WorkerStateRow) -> None:
        """Insert one worker snapshot into ``horsies_worker_states``."""
        await self._run_async(heartbeats.worker_state_query(state), "insert_worker_state")

    async def reap_async(self, recovery_config: RecoveryConfig) -> ReapReport:
        """One recovery pass, by at most one process of the cluster at a time: stale CLAIMED ->
        PENDING; stale RUNNING -> FAILED with WORKER_CRASHED, or retried when the task lists
        WORKER_CRASHED in auto_retry_for and has retries left; stuck workflows reconciled."""
        return await self._async.drive(recovery.reap_program(recovery_config, self._engine()))

    def reap(self, recovery_config: RecoveryConfig) -> ReapReport:
        """Sync twin of :meth:`reap_async`."""
        return self._sync.drive(recovery.reap_program(recovery_config, self._engine()))

    async def decide_async(self, nodes: Sequence[NodeRef]) -> None:
        """Decide workflow nodes an exchange or a finish left READY (their conditions and child
        workflows are the app's code): outside every transaction, the code in a worker thread."""
        engine = self._engine()
        if engine is not None and nodes:
            await self._async.drive(engine.decide(nodes))

    async def notify_async(self, channel: str, payload: str = "") -> None:
        """Send a notification (e.g. a delayed ``retry:<id>`` wake-up on a queue's channel)."""
        await self._run_async(channels.notify_query(channel, payload), "notify")

    def notify(self, channel: str, payload: str = "") -> None:
        """Sync twin of :meth:`notify_async`."""
        self._run_sync(channels.notify_query(channel, payload), "notify")

    # -- shutdown ----------------------------------------------------------------------------------

    def _close_common(self) -> None:
        self._waiters.close()
        self._workflow_waiters.close()
        with self._listener_lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            release_listener(listener)
        self._sync.close()

    def close(self) -> None:
        """Close the pools and release the listener (idempotent); async code: prefer
        :meth:`close_async`."""
        self._close_common()
        self._async_pools.close_all()
        self._hot_pools.close_all()

    async def close_async(self) -> None:
        """Close the current loop's pools, the sync pool and release the listener. Idempotent."""
        await self._async_pools.close_current()
        await self._hot_pools.close_current()
        self._close_common()
        self._async_pools.close_all()
        self._hot_pools.close_all()


def _many(rows: list[list[Any]]) -> Program[None]:
    return enqueue.insert_program(
        lambda: enqueue.enqueue_many_op(rows), rows, "enqueue_many", transaction=True
    )


def _batch(batch: TaskBatch) -> Program[None]:
    return enqueue.insert_program(
        lambda: enqueue.task_batch_op(batch), batch, "enqueue_many", transaction=True
    )


def _rows(sql: LiteralString) -> Op[list[dict[str, Any]]]:
    return monitoring.dict_rows(sql)


def _worker_states(max_age_s: float) -> Op[list[dict[str, Any]]]:
    return monitoring.dict_rows(mon_sql.MONITOR_WORKER_STATES, {"max_age_s": max_age_s})


def _fail_stale(threshold_ms: int) -> Op[tuple[int, int]]:
    return recovery.fail_stale_running_op(threshold_ms, allow_retry=False, max_batches=None)
