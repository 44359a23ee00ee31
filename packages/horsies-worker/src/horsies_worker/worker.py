"""The worker main process: an asyncio loop that claims, dispatches, completes and maintains.

Follow one task through it: a NOTIFY (or the poll timer, D33, or a freed child) wakes the claim
loop → in hard-cap mode without cluster-wide caps, one ``broker.finish_and_start_tasks`` round trip
writes the outcomes collected so far and moves up to one task per idle child from PENDING straight
to RUNNING for that child (:meth:`Worker._exchange`) → the tasks are written to the children's pipes
→ a child returns the encoded result → :class:`~horsies_worker.completer.Completer` decides retry
or final status and queues the outcome → the freed child wakes the claim loop, whose next round trip
writes the outcome and starts the next task. Soft-cap (prefetch) mode and cluster-wide caps keep a
CLAIMED phase: :class:`~horsies_worker.claimer.Claimer` claims up to the free local budget (under
the cluster claim lock when a cap applies), the tasks that have an idle child are started in one
``broker.start_tasks`` call, and the completer writes outcomes on its own
(:meth:`Worker._claim_and_dispatch`).

Beside that loop run the heartbeat writer, the reaper and the worker-state snapshots. A child that
dies is noticed through its sentinel at once (D34). SIGTERM/SIGINT start a graceful shutdown
(04 §12, improved): no new claims, unstarted claims released to PENDING, running tasks finish within
the
shutdown timeout and their results are still written, then the children stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from horsies import env
from horsies.broker.finish import TaskOutcome
from horsies.logs import configure_logging, get_logger
from horsies.workflows.store.hooks import WORKFLOW_STORE

from horsies_worker.children import Assignment, ChildPool, ChildProcess
from horsies_worker.claimer import Claimer
from horsies_worker.completer import Completer, build_outcome, crashed_result_json
from horsies_worker.config import WorkerConfig
from horsies_worker.executor import ChildInit
from horsies_worker.heartbeat import Heartbeater
from horsies_worker.reaper import Reaper
from horsies_worker.snapshots import SnapshotWriter

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker import PostgresBroker
    from horsies.broker.claims import ClaimedTask
    from horsies.broker.exchange import StartedTask
    from horsies.broker.hooks import NodeRef
    from horsies.broker.listener import NotificationListener, Subscription

logger = get_logger("worker")

_NOTIFY_CHANNEL_NEW = "task_new"
_COMPLETER_DRAIN_TIMEOUT_S = 15.0
_RETRY_WAKE_SLACK_S = 0.05
_CLAIM_ERROR_BACKOFF_MAX_S = 5.0
# Tasks that usually run longer than this are never held back to share a round trip (_linger).
_LINGER_MAX_S = 0.002
# Weight of the newest execution time in the running average that _linger consults.
_RUNTIME_EWMA_WEIGHT = 0.2
# Prefetch mode queues tasks behind a child's running one only while tasks usually take less than
# this, at most _CHILD_QUEUE_MAX per child: a queued task waits behind the running one (see
# _child_depth).
_CHILD_QUEUE_MAX_RUNTIME_S = 0.002
_CHILD_QUEUE_MAX = 32


class Worker:
    """One worker instance: owns the children, the claim loop and the maintenance loops.

    Prefer :func:`run_worker` (or ``horsies worker``), which locates the app, builds the
    :class:`~horsies_worker.config.WorkerConfig` and runs this; use the class directly when
    embedding a worker in your own event loop (``await Worker(app, config).run()``, stop it with
    :meth:`request_stop`).

    Ownership: every mutable attribute is read and written on the event-loop thread only (except
    ``_notify_scheduled``, see ``_subscribe``); signal handlers and
    :meth:`request_stop_threadsafe` hop onto the loop first.
    """

    def __init__(
        self,
        app: Horsies,
        config: WorkerConfig,
        *,
        broker: PostgresBroker | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.app = app
        self.config = config
        self.broker: PostgresBroker = broker if broker is not None else app.get_broker()
        if self.broker.workflows is None:
            # A broker built outside the app: finishing workflow tasks must advance their
            # workflows here too, with this worker's app running their conditions.
            self.broker.workflows = WORKFLOW_STORE
            self.broker.app = self.broker.app or app
        self.worker_id = str(uuid.uuid4())
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = datetime.now(UTC)
        self._install_signal_handlers = install_signal_handlers
        self._claimer = Claimer(self.broker, self.worker_id, config)
        # Claimed here but not yet handed to a child (soft-cap prefetch, or waiting for a child).
        self._pending: deque[ClaimedTask] = deque()
        self._pool: ChildPool | None = None
        self._completer: Completer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._maintenance_stop: asyncio.Event | None = None
        self._background: list[asyncio.Task[None]] = []
        self._completer_task: asyncio.Task[None] | None = None
        self._listener: NotificationListener | None = None
        self._subscriptions: list[Subscription] = []
        self._remove_reconnect_callback: Callable[[], None] | None = None
        self._shutting_down = False
        # Written by the listener thread and the loop; see _subscribe.
        self._notify_scheduled = False
        # Finished rows free cluster-wide capacity only when a cluster-wide cap applies.
        self._cluster_capped = config.cluster_wide_cap is not None or any(
            q.max_concurrency is not None for q in config.queues
        )
        # Claims go PENDING -> RUNNING in one step (no CLAIMED phase) unless a lease (soft cap) or
        # a cluster-wide count under the claim lock needs it.
        self._direct_start = not config.soft_cap and not self._cluster_capped
        # Prefetch without cluster-wide caps: outcomes, starts and claims share one round trip
        # (_prefetch_exchange); with such caps claims take the claim lock (_claim_and_dispatch).
        self._prefetch_exchange_mode = config.soft_cap and not self._cluster_capped
        # Tasks of a failed prefetch exchange whose starts may have committed: no longer held
        # here; the next exchange releases the claims among them and requeues the started ones.
        self._orphaned_claims: list[str] = []
        # Set when a claim+start round trip failed: it may have committed without its reply, so
        # the next one also sends this worker's untracked RUNNING rows back to PENDING.
        self._reconcile_needed = False
        # Running average of task execution times (send to result), for _linger.
        self._runtime_ewma: float | None = None
        self._stop_requested_early = False
        # Background jobs: requeues of tasks a dead child never began (_requeue_unstarted) and
        # workflow decisions (_decide).
        self._jobs: set[asyncio.Task[None]] = set()
        self.ready: asyncio.Event | None = None
        """Set once start-up has finished (children ready, listening); for embedding and tests."""

    # -- public control ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful shutdown; a second call stops waiting for running tasks.

        Must be called on the worker's event loop (signal handlers are); from another thread use
        :meth:`request_stop_threadsafe`.
        """
        if self._stop is None or self._wake is None or self._force is None:
            self._stop_requested_early = True
            return
        if not self._stop.is_set():
            logger.info(
                "Stop requested: no new claims; waiting up to %ss for running tasks",
                self.config.shutdown_timeout_s,
            )
            self._stop.set()
            self._wake.set()
        elif not self._force.is_set():
            logger.warning("Second stop request: terminating running tasks now")
            self._force.set()

    def request_stop_threadsafe(self) -> None:
        """Like :meth:`request_stop`, callable from any thread."""
        loop = self._loop
        if loop is None:
            self._stop_requested_early = True
            return
        loop.call_soon_threadsafe(self.request_stop)

    # -- counts (for heartbeats, snapshots and the budget) -----------------------------------------

    def _assignments(self) -> list[tuple[ChildProcess, Assignment]]:
        return self._pool.assignments() if self._pool is not None else []

    def running_count(self) -> int:
        """Tasks handed to children and not finished yet."""
        return sum(1 for _, a in self._assignments() if a.sent)

    def claimed_count(self) -> int:
        """Tasks this worker holds in CLAIMED: waiting locally or being started."""
        return len(self._pending) + sum(1 for _, a in self._assignments() if not a.sent)

    def _heartbeat_source(self) -> tuple[list[str], list[tuple[str, int]]]:
        claimed = [t.id for t in self._pending]
        running: list[tuple[str, int]] = []
        for child, assignment in self._assignments():
            if assignment.sent:
                running.append((assignment.task.id, child.pid))
            else:
                claimed.append(assignment.task.id)
        if self._completer is not None:
            # Finished, outcome not written yet: the row is still RUNNING and this worker will
            # write it, so keep it alive for the reapers (sender: the main process, which holds
            # the outcome). A slow write must not turn a finished task into WORKER_CRASHED.
            running.extend((task_id, self.pid) for task_id in self._completer.pending_ids())
        return claimed, running

    def _counts(self) -> tuple[int, int]:
        return self.running_count(), self.claimed_count()

    # -- main entry --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start, serve until a stop is requested, then shut down gracefully.

        Raises ``RuntimeError("Worker startup timeout…")`` when start-up takes longer than
        ``config.startup_timeout_s``, and whatever start-up failure occurred (schema, children).
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._maintenance_stop = asyncio.Event()
        self.ready = asyncio.Event()
        if self._stop_requested_early:
            self._stop.set()
        installed = self._add_signal_handlers(loop) if self._install_signal_handlers else []
        try:
            await self.broker.ensure_schema_initialized()
            try:
                await asyncio.wait_for(self._start(), timeout=self.config.startup_timeout_s)
            except TimeoutError as exc:
                raise RuntimeError(
                    f"Worker startup timeout: not ready within {self.config.startup_timeout_s:g}s"
                ) from exc
            self.ready.set()
            logger.info(
                "Worker %s ready: pid=%s processes=%s queues=%s",
                self.worker_id,
                self.pid,
                self.config.processes,
                ", ".join(self.config.queue_names),
            )
            await self._serve()
        finally:
            try:
                await self._shutdown()
            finally:
                for signum in installed:
                    with contextlib.suppress(Exception):
                        loop.remove_signal_handler(signum)

    def _add_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.request_stop)
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread, or a platform without loop signal handlers.
                continue
            installed.append(signum)
        return installed

    async def _start(self) -> None:
        cfg = self.config
        self._completer = Completer(
            self.broker,
            self.worker_id,
            on_flushed=self._on_flushed,
            notify_capacity=self._cluster_capped,
        )
        if not self._direct_start and not self._prefetch_exchange_mode:
            # Otherwise the claim loop writes outcomes in its own round trips; the completer's
            # writer only runs during shutdown (see _shutdown).
            self._completer_task = self._start_completer()
        init = ChildInit(
            locator=cfg.locator,
            loglevel=cfg.loglevel,
            task_modules=list(cfg.task_modules),
            sys_path_roots=list(cfg.sys_path_roots),
            parent_pid=self.pid,
            suppress_env=os.environ.get(env.SUPPRESS_SENDS),
        )
        self._pool = ChildPool(
            cfg.processes,
            init,
            on_result=self._on_child_result,
            on_exit=self._on_child_exit,
            on_ready=self._on_child_ready,
        )
        await self._pool.start()
        await self._subscribe()
        logger.info(
            "Concurrency config: processes=%s, cluster_wide_cap=%s, max_claim_per_worker=%s, "
            "max_claim_batch=%s",
            cfg.processes,
            cfg.cluster_wide_cap if cfg.cluster_wide_cap is not None else "unlimited",
            cfg.max_claim_per_worker,
            cfg.max_claim_batch,
        )
        stop = self._maintenance_stop
        assert stop is not None
        recovery = cfg.recovery
        heartbeater = Heartbeater(
            self.broker,
            worker_id=self.worker_id,
            hostname=self.hostname,
            pid=self.pid,
            claimer_interval_s=recovery.claimer_heartbeat_interval_ms / 1000.0,
            runner_interval_s=recovery.runner_heartbeat_interval_ms / 1000.0,
            source=self._heartbeat_source,
        )
        snapshots = SnapshotWriter(
            self.broker,
            cfg,
            worker_id=self.worker_id,
            hostname=self.hostname,
            started_at=self.started_at,
            counts=self._counts,
        )
        reaper = Reaper(self.broker, recovery)
        self._background = [
            asyncio.create_task(heartbeater.run(stop), name="horsies-heartbeat"),
            asyncio.create_task(snapshots.run(stop), name="horsies-snapshots"),
            asyncio.create_task(reaper.run(stop), name="horsies-reaper"),
        ]

    async def _subscribe(self) -> None:
        """LISTEN on ``task_new`` and each served queue's channel through the shared listener."""
        from horsies.broker.listener import acquire_listener

        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None

        def wake_from_loop() -> None:
            self._notify_scheduled = False
            wake.set()

        def on_notify(channel: str = "", payload: str = "") -> None:
            # Runs on the listener thread: only hop onto the loop, once per burst (every insert
            # notifies two channels we listen on). A racy read only costs one extra hop.
            del channel, payload
            if not self._notify_scheduled:
                self._notify_scheduled = True
                loop.call_soon_threadsafe(wake_from_loop)

        listener = acquire_listener(self.broker.config.conninfo)
        self._listener = listener
        channels = [_NOTIFY_CHANNEL_NEW, *(f"task_queue_{q}" for q in self.config.queue_names)]
        for channel in channels:
            subscription = await asyncio.to_thread(listener.subscribe, channel, on_notify)
            self._subscriptions.append(subscription)
        # Notifications sent while the listener was reconnecting are lost: claim again.
        self._remove_reconnect_callback = listener.add_reconnect_callback(on_notify)

    async def _unsubscribe(self) -> None:
        from horsies.broker.listener import release_listener

        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(subscription.close)
        if self._remove_reconnect_callback is not None:
            self._remove_reconnect_callback()
            self._remove_reconnect_callback = None
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(release_listener, listener)

    # -- claim loop --------------------------------------------------------------------------------

    def _start_completer(self) -> asyncio.Task[None]:
        completer = self._completer
        assert completer is not None
        return asyncio.create_task(completer.run(), name="horsies-completer")

    async def _serve(self) -> None:
        wake, stop = self._wake, self._stop
        assert wake is not None
        assert stop is not None
        backoff = 0.0
        poll = self.config.poll_interval_s
        wake.set()  # first pass at once
        while not stop.is_set():
            if not wake.is_set():
                # asyncio.timeout, not wait_for: no extra task per wake-up on the hot path.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await wake.wait()
            wake.clear()
            if stop.is_set():
                break
            try:
                if self._direct_start:
                    await self._linger()
                    await self._exchange()
                elif self._prefetch_exchange_mode:
                    await self._prefetch_exchange()
                else:
                    await self._claim_and_dispatch()
                backoff = 0.0
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.2), _CLAIM_ERROR_BACKOFF_MAX_S)
                logger.error("claim_pass_failed: %s (next try in %.1fs)", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)

    async def _linger(self) -> None:
        """Before writing results, give children whose task started a moment ago the chance to
        finish too, so that one round trip serves them all.

        Only when tasks are short (recent execution times below ``_LINGER_MAX_S``): then the
        database round trip and the main loop cost more than the tasks, and serving two children
        per exchange instead of one nearly halves both per task, while a child waits at most about
        two task durations. Longer tasks never wait: each result is written at once.
        """
        wake, stop, completer = self._wake, self._stop, self._completer
        assert wake is not None
        assert stop is not None
        assert completer is not None
        typical = self._runtime_ewma
        if not completer.pending or typical is None or typical > _LINGER_MAX_S:
            return
        window = min(_LINGER_MAX_S, 2 * typical)
        while not stop.is_set():
            now = time.monotonic()
            young = [
                a.started_monotonic
                for _, a in self._assignments()
                if a.sent and now - a.started_monotonic < window
            ]
            if not young:
                return
            # A result (or any other wake-up) ends the wait early; then look again.
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(young) + window - now):
                    await wake.wait()

    def _tracked_task_ids(self) -> list[str]:
        """Every task this worker still holds: on a child, waiting locally, or with an unwritten
        outcome."""
        completer = self._completer
        ids = [a.task.id for _, a in self._assignments()]
        ids += [t.id for t in self._pending]
        if completer is not None:
            ids += completer.pending_ids()
        return ids

    async def _exchange(self) -> None:
        """One hot-path pass: write the queued outcomes and start a task on every idle child, in
        one ``finish_and_start_tasks`` round trip (hard-cap mode without cluster-wide caps)."""
        pool, completer, stop, wake = self._pool, self._completer, self._stop, self._wake
        assert pool is not None
        assert completer is not None
        assert stop is not None
        assert wake is not None
        idle: list[ChildProcess] = []
        if not stop.is_set():
            budget = self._claimer.budget(
                running=self.running_count(), claimed=self.claimed_count()
            )
            idle = pool.idle_children()[: max(0, budget)]
        batch = completer.take()
        keep = self._tracked_task_ids() if self._reconcile_needed else None
        if not idle and not batch and keep is None:
            return
        try:
            exchange = await self.broker.exchange_async(
                self.worker_id,
                self.hostname,
                outcomes=batch,
                request=self._claimer.request(len(idle)) if idle else None,
                pids=[child.pid for child in idle],
                notify_capacity=False,  # nobody waits for capacity without cluster-wide caps
                keep_running_ids=keep,
            )
        except BaseException:
            completer.restore(batch)
            if idle:
                self._reconcile_needed = True
            raise
        if keep is not None:
            self._reconcile_needed = False
        completer.settle(batch, exchange.finished, exchange.undecided)
        if exchange.started:
            logger.debug("tasks_started: %s (idle children %s)", len(exchange.started), len(idle))
            self._hand_over(idle, exchange.started)
        if exchange.full and pool.idle_children():
            wake.set()  # the per-queue batch left children idle while tasks may be waiting
        if completer.pending:
            wake.set()  # more than one batch of outcomes was queued

    def _hand_over(self, children: Sequence[ChildProcess], started: Sequence[StartedTask]) -> None:
        """Give each task just started for a child pid to that child (its slot was free when the
        pid was chosen)."""
        by_pid = {child.pid: child for child in children}
        orphans: list[ClaimedTask] = []
        for item in started:
            task = item.task
            child = by_pid.get(item.pid)
            if child is not None and child.alive:
                assignment = Assignment(task=task)
                child.reserve(assignment)
                if child.send_task(assignment):
                    logger.debug("task_started: %s (%s) pid=%s", task.id, task.task_name, child.pid)
                    continue
                child.unreserve(assignment)
            orphans.append(task)
        if orphans:
            self._requeue_unstarted(orphans, "its child process died during the round trip")

    async def _prefetch_exchange(self) -> None:
        """One prefetch-mode pass: write the queued outcomes, start waiting claims on children
        with room, and claim more, in one ``finish_start_and_claim`` round trip.

        Passes run back to back while children have room, so each refills what the children ran
        during the previous one; a claim waits until a quarter of the budget is free unless nothing
        waits locally.
        """
        pool, completer, stop, wake = self._pool, self._completer, self._stop, self._wake
        assert pool is not None
        assert completer is not None
        assert stop is not None
        assert wake is not None
        pairs: list[tuple[ChildProcess, Assignment]] = []
        direct_pids: list[int] = []
        budget = 0
        if not stop.is_set():
            if self._dispatch_due():
                pairs = self._reserve_children(pool)
            budget = self._claimer.budget(
                running=self.running_count(), claimed=self.claimed_count()
            )
            if not self._pending:
                # Free child slots beyond the waiting claims: filled straight from PENDING.
                direct_pids = self._free_slot_pids(pool)[:budget]
            cfg = self.config
            rest = budget - len(direct_pids)
            if self._pending and rest * 4 < cfg.processes + cfg.prefetch_buffer:
                budget = len(direct_pids)  # claim once a quarter of the budget is free
        batch = completer.take()
        release = self._orphaned_claims
        keep = self._tracked_task_ids() if release or self._reconcile_needed else None
        if not pairs and not batch and budget <= 0 and keep is None:
            return
        try:
            exchange = await self.broker.prefetch_exchange_async(
                self.worker_id,
                self.hostname,
                outcomes=batch,
                starts=[(a.task.id, c.pid) for c, a in pairs],
                direct_pids=direct_pids,
                request=self._claimer.request(budget) if budget > 0 else None,
                release_ids=release,
                keep_running_ids=keep,
            )
        except BaseException:
            completer.restore(batch)
            if pairs or direct_pids:
                # The starts may have committed without the reply: these tasks are no longer
                # ours to run; the next exchange gives them back.
                for child, assignment in pairs:
                    child.unreserve(assignment)
                self._orphaned_claims = [*release, *(a.task.id for _, a in pairs)]
                self._reconcile_needed = True
            raise
        if keep is not None:
            self._orphaned_claims = []
            self._reconcile_needed = False
        completer.settle(batch, exchange.finished, exchange.undecided)
        if exchange.claimed:
            logger.debug("tasks_claimed: %s (budget %s)", len(exchange.claimed), budget)
            self._pending.extend(exchange.claimed)
        self._hand_over_claims(pairs, exchange.started)
        if exchange.direct:
            self._hand_over(pool.children, exchange.direct)
        if (
            self._dispatch_due()
            or completer.pending
            or len(exchange.direct) == len(direct_pids) > 0
        ):
            wake.set()

    def _free_slot_pids(self, pool: ChildPool) -> list[int]:
        """One child pid per free slot, level by level (idle children first), so that the most
        urgent tasks go where they start soonest."""
        depth = self._child_depth()
        held = {child.pid: len(child.assignments) for child in pool.children}
        pids: list[int] = []
        for level in range(depth):
            pids += [
                child.pid
                for child in pool.children
                if child.free_slots(depth) and held[child.pid] <= level
            ]
        return pids

    def _claim_budget(self) -> int:
        """How many tasks a prefetching pass claims now: the free budget once it is a quarter of
        what this worker may hold (or at once when nothing waits locally), else 0."""
        budget = self._claimer.budget(running=self.running_count(), claimed=self.claimed_count())
        cfg = self.config
        if self._pending and budget * 4 < cfg.processes + cfg.prefetch_buffer:
            return 0
        return budget

    async def _claim_and_dispatch(self) -> None:
        """One pass: start waiting tasks on children with room and, at the same time, claim the
        free budget; then start what the claim brought if a child has room.

        The start and the claim are independent (different rows, different connections), so they
        share the wait for their commits. A claim waits until a quarter of the budget is free unless
        nothing waits locally (``_claim_budget``).
        """
        stop, wake = self._stop, self._wake
        assert stop is not None
        assert wake is not None
        budget = 0 if stop.is_set() else self._claim_budget()
        if budget <= 0:
            if self._dispatch_due():
                await self._dispatch()
            return
        jobs: list[Awaitable[Any]] = [self._claimer.claim(budget)]
        if self._dispatch_due():
            jobs.append(self._dispatch())
        claimed, *dispatched = await asyncio.gather(*jobs, return_exceptions=True)
        if isinstance(claimed, BaseException):
            raise claimed
        if claimed:
            logger.debug("tasks_claimed: %s (budget %s)", len(claimed), budget)
            self._pending.extend(claimed)
        for failure in dispatched:
            if isinstance(failure, BaseException):
                raise failure
        if self._dispatch_due():
            await self._dispatch()
        # A full batch may mean more work is waiting (max_claim_batch, several queues): go again.
        if claimed and self._claimer.budget(
            running=self.running_count(), claimed=self.claimed_count()
        ):
            wake.set()

    def _dispatch_due(self) -> bool:
        """True when a task waits locally and a child has room for it."""
        pool = self._pool
        if pool is None or not self._pending:
            return False
        depth = self._child_depth()
        return any(child.free_slots(depth) for child in pool.children)

    def _child_depth(self) -> int:
        """How many tasks one child may hold at once: 1, or in prefetch mode while tasks are short
        (recent execution times below ``_CHILD_QUEUE_MAX_RUNTIME_S``) up to its share of the
        prefetch buffer plus the running one, at most ``_CHILD_QUEUE_MAX``.

        A queued task is RUNNING from the hand-over (its lease was checked then); the child starts
        it the moment the previous one returns instead of waiting for a database round trip of the
        main process, which is what bounds a prefetching worker on short tasks otherwise.
        """
        cfg = self.config
        typical = self._runtime_ewma
        if not cfg.soft_cap or typical is None or typical > _CHILD_QUEUE_MAX_RUNTIME_S:
            return 1
        share = -(-cfg.prefetch_buffer // cfg.processes)
        return min(_CHILD_QUEUE_MAX, 1 + share)

    def _reserve_children(self, pool: ChildPool) -> list[tuple[ChildProcess, Assignment]]:
        """Reserve child slots for waiting tasks: idle children first, then one queued task per
        child per round, so that the waiting tasks spread over the children."""
        depth = self._child_depth()
        pairs: list[tuple[ChildProcess, Assignment]] = []
        pending = self._pending
        for level in range(depth):
            for child in pool.children:
                if not pending:
                    return pairs
                if child.free_slots(depth) == 0 or len(child.assignments) != level:
                    continue
                assignment = Assignment(task=pending.popleft())
                child.reserve(assignment)  # synchronously: no other pass can take the slot
                pairs.append((child, assignment))
        return pairs

    async def _dispatch(self) -> None:
        """Start as many waiting tasks as the children have free slots, in one ``start_tasks``
        call."""
        pool = self._pool
        if pool is None or not self._pending:
            return
        pairs = self._reserve_children(pool)
        if not pairs:
            return
        try:
            started = await self.broker.start_async(
                self.worker_id, self.hostname, [(a.task.id, c.pid) for c, a in pairs]
            )
        except BaseException:
            for child, assignment in reversed(pairs):
                child.unreserve(assignment)
                self._pending.appendleft(assignment.task)
            raise
        self._hand_over_claims(pairs, started)
        if self._dispatch_due():
            assert self._wake is not None
            self._wake.set()

    def _hand_over_claims(
        self, pairs: Sequence[tuple[ChildProcess, Assignment]], started: set[str]
    ) -> None:
        """Send each reserved claim that was started to its child; drop the lost ones."""
        orphans: list[ClaimedTask] = []
        for child, assignment in pairs:
            task = assignment.task
            if task.id not in started:
                # Lease expired and another worker took it, or it was requeued: not ours any more.
                logger.info("task_claim_lost: %s (%s)", task.id, task.task_name)
                child.unreserve(assignment)
                continue
            if child.holds(assignment) and child.send_task(assignment):
                logger.debug("task_started: %s (%s) pid=%s", task.id, task.task_name, child.pid)
                continue
            # The child died between reservation and hand-over: the row is RUNNING with its pid,
            # but no user code ran it.
            child.unreserve(assignment)
            orphans.append(task)
        if orphans:
            self._requeue_unstarted(orphans, "its child process died before the hand-over")

    def _requeue_unstarted(self, tasks: Sequence[ClaimedTask], why: str) -> None:
        """Send the RUNNING rows of tasks no child ever began back to PENDING (not an attempt), by
        id: other round trips may be starting tasks meanwhile. Runs in the background; shutdown
        waits for it.
        """
        for task in tasks:
            logger.warning("task_requeued: %s (%s): %s", task.id, task.task_name, why)
        ids = [task.id for task in tasks]

        async def requeue() -> None:
            try:
                await self.broker.requeue_running_async(self.worker_id, ids)
            except Exception as exc:
                logger.error(
                    "requeue_unstarted_failed: %s (the reaper will recover %s task(s))",
                    exc,
                    len(tasks),
                )
            if self._wake is not None:
                self._wake.set()

        self._in_background(requeue(), "horsies-requeue")

    def _in_background(self, job: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``job`` beside the claim loop; shutdown waits for it (bounded)."""
        task = asyncio.get_running_loop().create_task(job, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _decide(self, nodes: list[NodeRef]) -> None:
        """Decide workflow nodes that wait for the app's code (conditions, child workflows): in a
        thread and outside every transaction, so a slow condition delays only its own node."""
        try:
            await self.broker.decide_async(nodes)
        except Exception as exc:
            logger.error(
                "workflow_decide_failed: %s (the reaper decides the %s node(s) later)",
                exc,
                len(nodes),
            )

    # -- child callbacks (event-loop thread) -------------------------------------------------------

    def _on_child_result(
        self, child: ChildProcess, assignment: Assignment, result_json: str, ok: bool
    ) -> None:
        task = assignment.task
        completer = self._completer
        assert completer is not None
        runtime = time.monotonic() - assignment.started_monotonic
        ewma = self._runtime_ewma
        self._runtime_ewma = (
            runtime if ewma is None else ewma + _RUNTIME_EWMA_WEIGHT * (runtime - ewma)
        )
        try:
            outcome = build_outcome(task, result_json, ok)
        except Exception as exc:  # defensive: never lose the slot over a bad result
            logger.exception("outcome_failed: %s: %s", task.id, exc)
            outcome = TaskOutcome(
                task_id=task.id,
                result_json=result_json,
                ok=ok,
                retry_delay_s=None,
                retry_count=task.retry_count,
                workflow_id=task.workflow_id,
            )
        completer.submit(outcome)
        if ok:
            logger.debug("task_finished: %s (%s) ok", task.id, task.task_name)
        elif outcome.retry_delay_s is not None:
            logger.info(
                "task_retry_scheduled: %s (%s) attempt %s in %ss",
                task.id,
                task.task_name,
                task.retry_count + 1,
                outcome.retry_delay_s,
            )
        else:
            logger.info("task_failed: %s (%s)", task.id, task.task_name)
        if self._wake is not None:
            self._wake.set()

    def _on_child_exit(
        self, child: ChildProcess, assignments: Sequence[Assignment], exitcode: int | None
    ) -> None:
        sent = [a for a in assignments if a.sent]
        if len(sent) > 1:
            # Queued behind the one that was running: the child never began them.
            self._requeue_unstarted(
                [a.task for a in sent[1:]], f"child process {child.pid} exited before starting it"
            )
        if sent:
            assignment = sent[0]
            if self._shutting_down and child.expected_exit:
                reason = (
                    f"Worker child process {child.pid} terminated at shutdown: the task was still "
                    f"running after the shutdown timeout ({self.config.shutdown_timeout_s:g}s)"
                )
            else:
                reason = (
                    f"Worker child process {child.pid} died while running the task "
                    f"(exit code {exitcode})"
                )
            task = assignment.task
            logger.error("task_crashed: %s (%s): %s", task.id, task.task_name, reason)
            self._submit_crash(assignment.task, child.pid, exitcode, reason)
        if not child.expected_exit:
            logger.warning(
                "child_died: index=%s pid=%s exit_code=%s; starting a replacement",
                child.index,
                child.pid,
                exitcode,
            )

    def _on_child_ready(self, child: ChildProcess) -> None:
        del child
        if self._wake is not None:
            self._wake.set()

    def _submit_crash(
        self, task: ClaimedTask, child_pid: int, exitcode: int | None, reason: str
    ) -> None:
        completer = self._completer
        assert completer is not None
        result_json = crashed_result_json(
            task=task,
            worker_id=self.worker_id,
            hostname=self.hostname,
            child_pid=child_pid,
            exitcode=exitcode,
            reason=reason,
        )
        completer.submit(build_outcome(task, result_json, False, failed_reason=reason))
        if self._wake is not None:
            # Direct-start mode writes outcomes only in claim-loop round trips: run one now, so
            # the crash is recorded at once (D34), not at the next poll or replacement child.
            self._wake.set()

    def _on_flushed(
        self, outcomes: Sequence[TaskOutcome], finished: set[str], undecided: Sequence[NodeRef]
    ) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        if undecided:
            self._in_background(self._decide(list(undecided)), "horsies-decide")
        for outcome in outcomes:
            if outcome.retry_delay_s is not None and outcome.task_id in finished:
                # Local wake-up when the retry becomes due; the poll covers other workers (D33).
                loop.call_later(outcome.retry_delay_s + _RETRY_WAKE_SLACK_S, wake.set)
        if self._cluster_capped:
            # Finished rows free cluster-wide capacity (queue caps): claim again.
            wake.set()

    # -- shutdown ----------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._shutting_down = True
        if self._completer is not None and self._completer_task is None:
            # Direct-start and prefetch-exchange modes: the claim loop no longer writes outcomes;
            # results of tasks that finish from now on are written by the completer's own writer.
            self._completer_task = self._start_completer()
        if self._pool is not None:
            self._pool.stop_respawning()
        if self._stop is not None:
            self._stop.set()
        await self._unsubscribe()
        # Unstarted claims go back at once instead of waiting for a reaper.
        if self._pending or self._orphaned_claims:
            ids = [*self._orphaned_claims, *(t.id for t in self._pending)]
            self._orphaned_claims = []
            self._pending.clear()
            try:
                released = await self.broker.release_claimed_async(self.worker_id, ids)
                logger.info("Released %s unstarted claimed task(s) to PENDING", released)
            except Exception as exc:
                logger.error("release_claimed_failed: %s (a reaper will requeue them)", exc)
        pool = self._pool
        if pool is not None:
            running = self.running_count()
            if running:
                logger.info(
                    "Waiting up to %ss for %s running task(s)",
                    self.config.shutdown_timeout_s,
                    running,
                )
            done = await pool.wait_until_idle(self.config.shutdown_timeout_s, self._force)
            if not done:
                logger.warning(
                    "Terminating %s task(s) still running at shutdown", self.running_count()
                )
            await pool.close()
        completer, completer_task = self._completer, self._completer_task
        if completer is not None and completer_task is not None:
            completer.close()
            try:
                await asyncio.wait_for(completer_task, _COMPLETER_DRAIN_TIMEOUT_S)
            except TimeoutError:
                logger.error(
                    "Could not write %s result(s) before exiting (a reaper will recover them)",
                    completer.pending,
                )
            except Exception as exc:
                logger.error("completer_failed: %s", exc)
        for job in list(self._jobs):
            try:
                await asyncio.wait_for(job, _COMPLETER_DRAIN_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                logger.error("background_job_timeout: %s (the reaper recovers what it left)", job)
        if self._reconcile_needed and completer is not None:
            try:
                await self.broker.requeue_untracked_async(self.worker_id, completer.pending_ids())
            except Exception as exc:
                logger.error("requeue_untracked_failed: %s (a reaper will recover such tasks)", exc)
        if self._maintenance_stop is not None:
            self._maintenance_stop.set()
        for task in self._background:
            try:
                await asyncio.wait_for(task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception as exc:
                logger.error("background_loop_failed: %s", exc)
        self._background = []
        with contextlib.suppress(Exception):
            await self.broker.close_async()
        logger.info("Worker %s stopped", self.worker_id)


# --------------------------------------------------------------------------------------------------
# Programmatic entry point


def locator_for_app(app: Horsies) -> tuple[str, list[str]]:
    """Find a canonical locator for an app object, so children can import it again.

    Looks for a module-level variable holding ``app`` in the loaded modules, preferring importable
    modules over ``__main__`` (which is located by its real file path). Returns
    ``(locator, sys_path_roots)``.

    Raises:
        ConfigurationError: E207 when no module-level variable holds the app (for example an app
            built inside a function); pass a locator string instead.
    """
    from horsies.errors import ConfigurationError, ErrorCode

    fallback: tuple[str, list[str]] | None = None
    for name, module in list(sys.modules.items()):
        if name.startswith(("horsies.", "horsies_worker.")) and not name.startswith(
            "horsies._dynamic."
        ):
            continue
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        for attr, value in items:
            if value is not app or attr.startswith("__"):
                continue
            file = getattr(module, "__file__", None)
            if name in ("__main__", "__mp_main__") or name.startswith("horsies._dynamic."):
                if file and fallback is None:
                    real = os.path.realpath(file)
                    fallback = (f"{real}:{attr}", [os.path.dirname(real)])
                continue
            return f"{name}:{attr}", []
    if fallback is not None:
        return fallback
    raise ConfigurationError(
        "cannot find a module-level variable holding this app",
        code=ErrorCode.WORKER_INVALID_LOCATOR,
    ).with_help(
        "worker children import the app again; define it at module level or pass a locator "
        "such as 'myapp.instance:app' to run_worker()"
    )


def import_task_modules_suppressed(app: Horsies, modules: list[str]) -> None:
    """Import ``modules`` in this process with every send suppressed (D35)."""
    from horsies.locator import sends_suppressed_by_env

    if not modules:
        return
    with sends_suppressed_by_env():
        app.import_task_modules(modules)


def prepare_worker(
    app_or_locator: Horsies | str,
    *,
    processes: int | None = None,
    loglevel: str = "INFO",
    max_claim_batch: int = 2,
    max_claim_per_worker: int = 0,
    shutdown_timeout_s: float = 30.0,
    poll_interval_s: float = 1.0,
    startup_timeout_s: float | None = None,
) -> tuple[Horsies, WorkerConfig]:
    """Locate the app (sends suppressed), build the worker configuration, import the task modules.

    Steps 2-4 of 04 §2 without the banner; raises what the locator or the imports raise.
    """
    from horsies.locator import locate_app

    if isinstance(app_or_locator, str):
        location = locate_app(app_or_locator)
        app = location.app
        locator = location.canonical_locator
        roots = list(location.sys_path_roots)
    else:
        app = app_or_locator
        locator, roots = locator_for_app(app)
    app.set_role("worker")
    options: dict[str, Any] = {}
    if startup_timeout_s is not None:
        options["startup_timeout_s"] = startup_timeout_s
    config = WorkerConfig.from_app(
        app,
        locator=locator,
        sys_path_roots=roots,
        processes=processes,
        loglevel=loglevel,
        max_claim_batch=max_claim_batch,
        max_claim_per_worker=max_claim_per_worker,
        shutdown_timeout_s=shutdown_timeout_s,
        poll_interval_s=poll_interval_s,
        **options,
    )
    if env.flag(env.DEBUG_IMPORTS):
        logger.info(
            "debug_imports: locator=%s sys_path_roots=%s task_modules=%s",
            config.locator,
            config.sys_path_roots,
            config.task_modules,
        )
    import_task_modules_suppressed(app, config.task_modules)
    return app, config


def run_worker(
    app_or_locator: Horsies | str,
    *,
    processes: int | None = None,
    loglevel: str = "INFO",
    max_claim_batch: int = 2,
    max_claim_per_worker: int = 0,
    shutdown_timeout_s: float = 30.0,
    poll_interval_s: float = 1.0,
    install_signal_handlers: bool = True,
    configure_logs: bool = True,
    banner: Callable[[Horsies], None] | None = None,
) -> None:
    """Run a worker in this process until SIGTERM/SIGINT, then shut down gracefully and return.

    ``app_or_locator`` is a :class:`~horsies.app.Horsies` defined at module level, or a locator
    string (``"myapp.instance:app"``, ``"path/to/app.py:app"``, …; 04 §1.1). The options mirror
    ``horsies worker``; ``processes`` defaults to the CPU count (D32). Prefer the CLI for
    deployments; use this from a script (guard it with ``if __name__ == "__main__":`` — children are
    spawned and
    re-import the main module) or a process manager that wants a Python entry point.

    Raises the locator's errors, ``ValueError`` for invalid options, and ``RuntimeError`` for a
    start-up failure (children could not start, start-up timeout).
    """
    if configure_logs:
        configure_logging(loglevel)
    logger.info("Starting horsies worker")
    app, config = prepare_worker(
        app_or_locator,
        processes=processes,
        loglevel=loglevel,
        max_claim_batch=max_claim_batch,
        max_claim_per_worker=max_claim_per_worker,
        shutdown_timeout_s=shutdown_timeout_s,
        poll_interval_s=poll_interval_s,
    )
    if banner is not None:
        banner(app)
    worker = Worker(app, config, install_signal_handlers=install_signal_handlers)
    asyncio.run(worker.run())
