"""The worker main process: an asyncio loop that claims, dispatches, completes and maintains.

Follow one task through it: a NOTIFY (or the poll timer, or a freed child) wakes the claim loop →
one pass of the worker's claim mode (``modes``; the default writes the outcomes collected so far
and moves up to one task per idle child from PENDING straight to RUNNING, in one round trip) → the
tasks are written to the children's pipes (``children``) → a child runs one and returns the encoded
result (``child_main``) → :class:`~horsies_worker.completer.Completer` decides retry or final status
and queues the outcome → the freed child wakes the claim loop, whose next pass writes the outcome
and starts the next task. Workflow nodes that the write left waiting for the app's code are
decided in the background (``WorkerState.decide``).

Beside that loop run the heartbeat writer, the reaper and the worker-state snapshots. A child that
dies is noticed through its sentinel at once: its task fails as crashed (or is retried) and a fresh
child replaces it. SIGTERM/SIGINT start a graceful shutdown: no new claims, unstarted claims
released to PENDING, running tasks finish within the shutdown timeout and their results are still
written, then the children stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from horsies import env
from horsies.app import DEFAULT_QUEUE
from horsies.broker.channels import TASK_NEW, TASK_STOP, queue_channel
from horsies.broker.claims import AttemptKey, Start
from horsies.broker.finish import TaskOutcome
from horsies.logs import configured_log_format, get_logger, set_log_context, task_fields
from horsies.stop_signals import stop_on_signals
from horsies.workflows.store.hooks import WORKFLOW_STORE

from horsies_worker.child_exits import ChildExits
from horsies_worker.children import Assignment, ChildPool, ChildProcess
from horsies_worker.claimer import Claimer
from horsies_worker.completer import (
    Completer,
    build_outcome,
    decode_failure,
    failure_summary,
)
from horsies_worker.config import WorkerConfig
from horsies_worker.footprint import release_free_memory
from horsies_worker.heartbeat import Heartbeater
from horsies_worker.identity import WorkerIdentity
from horsies_worker.limits import enforce_limits
from horsies_worker.metrics import WorkerMetrics
from horsies_worker.modes import ClaimMode, choose_mode
from horsies_worker.reaper import Reaper
from horsies_worker.snapshots import SnapshotWriter
from horsies_worker.spawn import ChildInit
from horsies_worker.state import DECIDE_JOB, WorkerState

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker import PostgresBroker
    from horsies.broker.hooks import NodeRef
    from horsies.broker.listener import NotificationListener, Subscription

__all__ = ["Worker"]

logger = get_logger("worker")

_COMPLETER_DRAIN_TIMEOUT_S: Final = 15.0
_RETRY_WAKE_SLACK_S: Final = 0.05
_CLAIM_ERROR_BACKOFF_MAX_S: Final = 5.0


class Worker:
    """One worker instance: owns the children, the claim loop and the maintenance loops.

    Prefer :func:`~horsies_worker.run.run_worker` (or ``horsies worker``), which locates the app,
    builds the :class:`~horsies_worker.config.WorkerConfig` and runs this; use the class directly
    when embedding a worker in your own event loop (``await Worker(app, config).run()``, stop it
    with :meth:`request_stop`).

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
        self.identity = WorkerIdentity(self.worker_id, self.hostname, self.pid, self.started_at)
        """The four above, as the worker's collaborators take them."""
        self._install_signal_handlers = install_signal_handlers
        self._metrics = WorkerMetrics() if config.metrics_port is not None else None
        """Its metrics, or None when they are off: every place that records tests that once."""
        self._claimer = Claimer(self.broker, self.worker_id, config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._maintenance_stop = asyncio.Event()
        self._state: WorkerState | None = None
        self._exits = ChildExits(
            self.identity,
            config,
            self._wake,
            self._force,
            state=lambda: self._state,
            shutting_down=lambda: self._shutting_down,
        )
        self._mode: ClaimMode | None = None
        self._background: list[asyncio.Task[None]] = []
        self._completer_task: asyncio.Task[None] | None = None
        self._listener: NotificationListener | None = None
        self._subscriptions: list[Subscription] = []
        self._remove_reconnect_callback: Callable[[], None] | None = None
        self._shutting_down = False
        # Written by the listener thread and the loop; see _subscribe.
        self._notify_scheduled = False
        self.ready = asyncio.Event()
        """Set once start-up has finished (children ready, listening); for embedding and tests."""

    # -- public control ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful shutdown; a second call stops waiting for running tasks.

        Must be called on the worker's event loop (signal handlers are); from another thread use
        :meth:`request_stop_threadsafe`.
        """
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
            self._stop.set()  # not running yet: it will stop as soon as it starts
            return
        loop.call_soon_threadsafe(self.request_stop)

    # -- counts (for heartbeats, snapshots and the budget) -----------------------------------------

    def running_count(self) -> int:
        """Tasks handed to children and not finished yet."""
        return 0 if self._state is None else self._state.running_count()

    def claimed_count(self) -> int:
        """Tasks this worker holds in CLAIMED: waiting locally or being started."""
        return 0 if self._state is None else self._state.claimed_count()

    def _heartbeat_source(self) -> tuple[list[AttemptKey], list[Start]]:
        state = self._state
        if state is None:
            return [], []
        claimed = [t.key for t in state.pending]
        running: list[Start] = []
        for child, assignment in state.assignments():
            if assignment.sent:
                running.append((*assignment.task.key, child.pid))
            else:
                claimed.append(assignment.task.key)
        # Finished, outcome not written yet: the row is still RUNNING and this worker will write
        # it, so keep it alive for the reapers (sender: the main process, which holds the
        # outcome). A slow write must not turn a finished task into WORKER_CRASHED.
        running.extend((*key, self.pid) for key in state.completer.pending_keys())
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
        set_log_context(role="worker", worker_id=self.worker_id)
        with stop_on_signals(loop, self.request_stop, install=self._install_signal_handlers):
            try:
                await self.broker.ensure_schema_initialized()
                try:
                    await asyncio.wait_for(self._start(), timeout=self.config.startup_timeout_s)
                except TimeoutError as exc:
                    raise RuntimeError(
                        "Worker startup timeout: not ready within "
                        f"{self.config.startup_timeout_s:g}s"
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
                await self._shutdown()

    async def _start(self) -> None:
        cfg, metrics = self.config, self._metrics
        if metrics is not None:
            self._serve_metrics(metrics)
        completer = Completer(
            self.broker,
            self.worker_id,
            on_flushed=self._on_flushed,
            notify_capacity=cfg.cluster_capped,
            metrics=metrics,
        )
        init = ChildInit(
            locator=cfg.locator,
            loglevel=cfg.loglevel,
            log_format=configured_log_format(),
            worker_id=self.worker_id,
            task_modules=list(cfg.task_modules),
            sys_path_roots=list(cfg.sys_path_roots),
            suppress_env=os.environ.get(env.SUPPRESS_SENDS),
        )
        pool = ChildPool(
            cfg.processes,
            init,
            on_result=self._on_child_result,
            on_exit=self._exits.on_exit,
            on_ready=self._on_child_ready,
            on_start=None if metrics is None else metrics.task_started,
        )
        state = self._state = WorkerState(
            identity=self.identity,
            config=cfg,
            broker=self.broker,
            claimer=self._claimer,
            pool=pool,
            completer=completer,
            wake=self._wake,
            stop=self._stop,
            async_names=frozenset(name for name, task in self.app.tasks.items() if task.is_async),
            metrics=metrics,
        )
        await enforce_limits(self.app, cfg, self.broker, self._claimer)
        self._mode = choose_mode(state)
        if not self._mode.writes_outcomes:
            # Otherwise the claim passes write outcomes in their own round trips; the completer's
            # writer only runs during shutdown (see _shutdown).
            self._completer_task = self._start_completer(completer)
        await pool.start()
        await self._subscribe()
        logger.info(
            "Concurrency config: processes=%s, cluster_wide_cap=%s, max_claim_per_worker=%s, "
            "max_claim_batch=%s",
            cfg.processes,
            cfg.cluster_wide_cap if cfg.cluster_wide_cap is not None else "unlimited",
            cfg.max_claim_per_worker,
            cfg.max_claim_batch,
        )
        recovery = cfg.recovery
        heartbeater = Heartbeater(
            self.broker,
            self.identity,
            claimer_interval_s=recovery.claimer_heartbeat_interval_ms / 1000.0,
            runner_interval_s=recovery.runner_heartbeat_interval_ms / 1000.0,
            source=self._heartbeat_source,
            on_stop=self._exits.stop,
            metrics=metrics,
        )
        snapshots = SnapshotWriter(
            self.broker,
            cfg,
            self.identity,
            counts=self._counts,
            limits=self._claimer.limits,
            metrics=metrics,
        )
        reaper = Reaper(self.broker, recovery, self.app.config.retention, metrics)
        stop = self._maintenance_stop
        self._background = [
            asyncio.create_task(heartbeater.run(stop), name="horsies-heartbeat"),
            asyncio.create_task(snapshots.run(stop), name="horsies-snapshots"),
            asyncio.create_task(reaper.run(stop), name="horsies-reaper"),
        ]
        if metrics is not None:
            gauges = metrics.read_cluster(self.broker, cfg.queue_names, stop)
            self._background.append(asyncio.create_task(gauges, name="horsies-metrics"))
        # Start-up is over (imports, the first connections, the children): what it freed goes back.
        release_free_memory()

    def _serve_metrics(self, metrics: WorkerMetrics) -> None:
        """Start the metrics server, with a zero series for each served queue and task."""
        cfg = self.config
        served = set(cfg.queue_names)
        tasks = [
            (queue, name)
            for name, task in self.app.tasks.items()
            if (queue := task.task_queue_name or DEFAULT_QUEUE) in served
        ]
        metrics.expect(cfg.queue_names, tasks)
        assert cfg.metrics_port is not None
        port = metrics.serve(cfg.metrics_host, cfg.metrics_port)
        logger.info("metrics_serving: http://%s:%s/metrics", cfg.metrics_host, port)

    async def _subscribe(self) -> None:
        """LISTEN on ``task_new``, each served queue's channel and ``task_stop`` (a running task to
        stop) through the shared listener."""
        loop = asyncio.get_running_loop()
        wake = self._wake

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

        def on_stop(channel: str = "", payload: str = "") -> None:
            del channel
            loop.call_soon_threadsafe(self._exits.stop, [payload])

        listener = self.broker.listener
        self._listener = listener
        channels = [TASK_NEW, *(queue_channel(q) for q in self.config.queue_names)]
        for channel in channels:
            subscription = await asyncio.to_thread(listener.subscribe, channel, on_notify)
            self._subscriptions.append(subscription)
        stops = await asyncio.to_thread(listener.subscribe, TASK_STOP, on_stop)
        self._subscriptions.append(stops)
        # Notifications sent while the listener was reconnecting are lost: claim again.
        self._remove_reconnect_callback = listener.add_reconnect_callback(on_notify)

    async def _unsubscribe(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(subscription.close)
        if self._remove_reconnect_callback is not None:
            self._remove_reconnect_callback()
            self._remove_reconnect_callback = None
        self._listener = None

    # -- claim loop --------------------------------------------------------------------------------

    def _start_completer(self, completer: Completer) -> asyncio.Task[None]:
        return asyncio.create_task(completer.run(), name="horsies-completer")

    async def _serve(self) -> None:
        wake, stop, mode = self._wake, self._stop, self._mode
        assert mode is not None
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
                await mode.run_pass()
                backoff = 0.0
            except Exception as exc:
                if self._metrics is not None:
                    self._metrics.database_error("claim", exc)
                backoff = min(max(backoff * 2, 0.2), _CLAIM_ERROR_BACKOFF_MAX_S)
                logger.error("claim_pass_failed: %s (next try in %.1fs)", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)

    # -- child callbacks (event-loop thread) -------------------------------------------------------

    def _on_child_result(
        self, child: ChildProcess, assignment: Assignment, result_json: str, ok: bool
    ) -> None:
        del child
        state = self._state
        assert state is not None
        task = assignment.task
        state.record_runtime(time.monotonic() - assignment.started_monotonic)
        failure = None if ok else decode_failure(result_json)
        outcome = build_outcome(task, result_json, ok, failure=failure)
        state.submit_outcome(assignment, outcome)
        if failure is None:
            logger.debug(
                "task_finished: %s (%s) ok",
                task.id,
                task.task_name,
                extra=task_fields(task.id, task.task_name),
            )
            self._wake.set()
            return
        why, trace = failure_summary(failure)
        if outcome.retry_delay_s is not None:
            logger.info(
                "task_retry_scheduled: %s (%s) retry %s in %gs after %s%s",
                task.id,
                task.task_name,
                task.retry_count + 1,
                outcome.retry_delay_s,
                why,
                trace,
                extra=task_fields(task.id, task.task_name),
            )
        else:
            logger.warning(
                "task_failed: %s (%s): %s%s",
                task.id,
                task.task_name,
                why,
                trace,
                extra=task_fields(task.id, task.task_name),
            )
        self._wake.set()

    def _on_child_ready(self, child: ChildProcess) -> None:
        del child
        self._wake.set()

    def _on_flushed(
        self, outcomes: Sequence[TaskOutcome], finished: set[str], undecided: Sequence[NodeRef]
    ) -> None:
        loop, state = self._loop, self._state
        if loop is None or state is None:
            return
        state.decide(undecided)
        for outcome in outcomes:
            if outcome.retry_delay_s is not None and outcome.task_id in finished:
                # A local wake-up when the retry becomes due; other workers' poll covers theirs.
                loop.call_later(outcome.retry_delay_s + _RETRY_WAKE_SLACK_S, self._wake.set)
        if self.config.cluster_capped:
            # Finished rows free cluster-wide capacity (queue caps): claim again.
            self._wake.set()

    # -- shutdown ----------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._shutting_down = True
        state = self._state
        if state is not None and self._completer_task is None:
            # The claim passes no longer write outcomes; results of tasks that finish from now on
            # are written by the completer's own writer.
            self._completer_task = self._start_completer(state.completer)
        if state is not None:
            state.pool.stop_respawning()
        self._stop.set()
        await self._unsubscribe()
        if state is not None:
            await self._drain(state)
        self._maintenance_stop.set()
        for task in self._background:
            try:
                await asyncio.wait_for(task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception as exc:
                logger.error("background_loop_failed: %s", exc)
        self._background = []
        if self._metrics is not None:
            await self._metrics.close()
        with contextlib.suppress(Exception):
            await self.broker.close_async()
        logger.info("Worker %s stopped", self.worker_id)

    async def _drain(self, state: WorkerState) -> None:
        """Give back unstarted claims, let running tasks finish (bounded), write their results and
        wait for the background jobs."""
        if state.pending or state.orphaned_claims:
            # Unstarted claims go back at once instead of waiting for a reaper.
            claims = [*state.orphaned_claims, *(t.key for t in state.pending)]
            state.orphaned_claims = []
            state.pending.clear()
            try:
                released = await self.broker.release_claimed_async(self.worker_id, claims)
                logger.info("Released %s unstarted claimed task(s) to PENDING", released)
            except Exception as exc:
                logger.error("release_claimed_failed: %s (a reaper will requeue them)", exc)
        running = state.running_count()
        if running:
            logger.info(
                "Waiting up to %ss for %s running task(s)", self.config.shutdown_timeout_s, running
            )
        done = await state.pool.wait_until_idle(self.config.shutdown_timeout_s, self._force)
        if not done:
            logger.warning(
                "Terminating %s task(s) still running at shutdown", state.running_count()
            )
        await state.pool.close()
        completer, completer_task = state.completer, self._completer_task
        if completer_task is not None:
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
        for job in list(state.jobs):
            if job.get_name() == DECIDE_JOB:
                # The app's code may take long; the node stays READY and a reaper decides it.
                job.cancel()
            try:
                await asyncio.wait_for(job, _COMPLETER_DRAIN_TIMEOUT_S)
            except asyncio.CancelledError:
                pass
            except TimeoutError:
                logger.error("background_job_timeout: %s (the reaper recovers what it left)", job)
        if state.reconcile_needed:
            try:
                await self.broker.requeue_untracked_async(self.worker_id, completer.pending_keys())
            except Exception as exc:
                logger.error("requeue_untracked_failed: %s (a reaper will recover such tasks)", exc)
