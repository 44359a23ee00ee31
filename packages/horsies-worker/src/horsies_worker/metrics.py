"""Prometheus metrics of one worker, served over HTTP when asked for (``--metrics-port``).

prometheus-client is the optional ``metrics`` extra (``pip install "horsies-worker[metrics]"``),
so that producers and workers without ``--metrics-port`` never install or import it: this module
imports it only when a :class:`WorkerMetrics` is made. A worker without metrics holds ``None``
instead of a recorder, and each place that records tests that once, so metrics cost nothing when
they are off.

Where each figure comes from (names and meanings in docs/production.md, "Metrics"):

- a task **starts** when its message is written to a child's pipe (the child pool's ``on_start``),
  so that started minus finished is what runs now;
- a task **finishes** when its outcome is queued for writing (``WorkerState.submit_outcome``),
  with its run time from that start to its result (or its child's death);
- a **claim** is a round trip of a claim mode that asked for tasks;
- a **database error** is a `BrokerError` that one of the worker's loops caught (it retries);
- the **queue** and **worker** gauges are read from the database every
  :data:`GAUGES_INTERVAL_S` (``broker.cluster_gauges_async``): the same cluster-wide figures on
  every worker that serves metrics.

Ownership: the recording methods run on the worker's event-loop thread; prometheus-client locks its
values, so its HTTP server thread reads them safely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from horsies.broker.errors import BrokerError
from horsies.errors import ConfigurationError, ErrorCode
from horsies.logs import get_logger

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from horsies.broker import PostgresBroker
    from horsies.broker.claims import ClaimedTask
    from horsies.broker.finish import TaskOutcome
    from horsies.broker.monitoring import ClusterGauges
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "DATABASE_OPERATIONS",
    "GAUGES_INTERVAL_S",
    "OUTCOMES",
    "WorkerMetrics",
    "outcome_label",
    "require_prometheus_client",
]

logger = get_logger("worker")

_INSTALL_HINT: Final = 'pip install "horsies-worker[metrics]"'

GAUGES_INTERVAL_S: Final = 15.0
"""How often the queue and worker gauges are read from the database: a common scrape interval, as
the read's cost grows with the backlog (every due task is counted)."""
OUTCOMES: Final = ("ok", "failed", "retried", "cancelled")
"""The ``outcome`` label values of ``horsies_tasks_finished_total``."""
DATABASE_OPERATIONS: Final = (
    "claim",
    "finish",
    "heartbeat",
    "snapshot",
    "reap",
    "prune",
    "requeue",
    "decide",
    "gauges",
)
"""The ``operation`` label values of ``horsies_database_errors_total``: the worker's loops."""

# Task run times span a sub-millisecond no-op to an hour-long job.
_RUN_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
# One database round trip: well under a millisecond on a local server, seconds when it struggles.
_CLAIM_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


def require_prometheus_client() -> None:
    """Check that prometheus-client can be imported; ConfigurationError (E210) saying how to
    install it otherwise."""
    try:
        import prometheus_client  # the metrics extra, optional (see the module docstring)
    except ImportError as exc:
        error = ConfigurationError(
            "--metrics-port needs the prometheus-client package, which is not installed",
            code=ErrorCode.CLI_COMMAND_UNAVAILABLE,
        ).with_location(None)
        raise error.with_help(f"{_INSTALL_HINT}, or run the worker without --metrics-port") from exc
    del prometheus_client  # WorkerMetrics imports what it uses


def outcome_label(outcome: TaskOutcome, *, cancelled: bool = False) -> str:
    """The ``outcome`` label of a finished run: ``cancelled`` for a run stopped by ``cancel()``
    (the database never retries one), else ``ok``, ``retried`` or ``failed``."""
    if outcome.ok:
        return "ok"
    if cancelled:
        return "cancelled"
    return "failed" if outcome.retry_delay_s is None else "retried"


class _TaskSeries:
    """The series of one (queue, task): looked up once, not on every event."""

    __slots__ = ("finished", "run_seconds", "started")

    def __init__(self, metrics: WorkerMetrics, queue: str, task: str) -> None:
        self.started = metrics.tasks_started.labels(queue, task)
        self.run_seconds = metrics.task_run_seconds.labels(queue, task)
        self.finished = {o: metrics.tasks_finished.labels(queue, task, o) for o in OUTCOMES}


class WorkerMetrics:
    """The metrics of one worker, in a registry of its own (two workers in one process, or an app
    that uses prometheus-client itself, never collide), and their HTTP server.

    Raises ConfigurationError (E210) when prometheus-client is not installed.
    """

    def __init__(self) -> None:
        require_prometheus_client()
        # The optional extra, present (checked above): imported here, never by a worker without
        # metrics.
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry: CollectorRegistry = CollectorRegistry()
        registry = self.registry
        self.tasks_started: Counter = Counter(
            "horsies_tasks_started",
            "Tasks whose code began in a child process of this worker.",
            ("queue", "task"),
            registry=registry,
        )
        self.tasks_finished: Counter = Counter(
            "horsies_tasks_finished",
            "Runs of tasks on this worker that ended, by outcome: ok, failed (for good), "
            "retried (another attempt is due), cancelled (stopped by cancel()).",
            ("queue", "task", "outcome"),
            registry=registry,
        )
        self.task_run_seconds: Histogram = Histogram(
            "horsies_task_run_seconds",
            "Run time of tasks on this worker, from the hand-over to the child to the result.",
            ("queue", "task"),
            registry=registry,
            buckets=_RUN_BUCKETS,
        )
        self.claim_seconds: Histogram = Histogram(
            "horsies_claim_seconds",
            "Database round trips of this worker that claimed (and started) tasks.",
            registry=registry,
            buckets=_CLAIM_BUCKETS,
        )
        self.database_errors: Counter = Counter(
            "horsies_database_errors",
            "Failed database operations of this worker's loops (each is retried).",
            ("operation",),
            registry=registry,
        )
        self.queue_depth: Gauge = Gauge(
            "horsies_queue_depth",
            "PENDING tasks of the queue that are due now (cluster-wide, read from the database).",
            ("queue",),
            registry=registry,
        )
        self.queue_oldest_pending_seconds: Gauge = Gauge(
            "horsies_queue_oldest_pending_seconds",
            "Seconds since the oldest due PENDING task of the queue became due (0 when none).",
            ("queue",),
            registry=registry,
        )
        self.workers_alive: Gauge = Gauge(
            "horsies_workers_alive",
            "Workers whose latest snapshot is recent and not a stop (cluster-wide).",
            registry=registry,
        )
        for operation in DATABASE_OPERATIONS:
            self.database_errors.labels(operation)
        self._series: dict[tuple[str, str], _TaskSeries] = {}
        self._server: WSGIServer | None = None

    # -- recording (event-loop thread) -------------------------------------------------------------

    def expect(self, queues: Iterable[str], tasks: Iterable[tuple[str, str]]) -> None:
        """Create the series of these queues and (queue, task) pairs at zero, so that a dashboard
        sees them before their first event (Prometheus's ``increase`` needs a starting point)."""
        for queue in queues:
            self.queue_depth.labels(queue)
            self.queue_oldest_pending_seconds.labels(queue)
        for queue, task in tasks:
            self._task(queue, task)

    def _task(self, queue: str, task: str) -> _TaskSeries:
        series = self._series.get((queue, task))
        if series is None:
            series = self._series[(queue, task)] = _TaskSeries(self, queue, task)
        return series

    def task_started(self, task: ClaimedTask) -> None:
        """A task's code began in a child."""
        self._task(task.queue_name, task.task_name).started.inc()

    def task_finished(
        self, task: ClaimedTask, outcome: TaskOutcome, run_s: float, *, cancelled: bool = False
    ) -> None:
        """A run ended with ``outcome`` after ``run_s`` seconds."""
        series = self._task(task.queue_name, task.task_name)
        series.finished[outcome_label(outcome, cancelled=cancelled)].inc()
        series.run_seconds.observe(run_s)

    def claimed(self, seconds: float) -> None:
        """A round trip that claimed tasks took ``seconds``."""
        self.claim_seconds.observe(seconds)

    def database_error(self, operation: str, exc: BaseException) -> None:
        """Count ``exc`` if it is a database error (others are bugs, logged where caught)."""
        if isinstance(exc, BrokerError):
            self.database_errors.labels(operation).inc()

    def cluster(self, gauges: ClusterGauges) -> None:
        """Set the queue and worker gauges from a database read."""
        for queue in gauges.queues:
            self.queue_depth.labels(queue.queue).set(queue.depth)
            self.queue_oldest_pending_seconds.labels(queue.queue).set(queue.oldest_pending_s or 0.0)
        self.workers_alive.set(gauges.workers_alive)

    async def read_cluster(
        self,
        broker: PostgresBroker,
        queues: Sequence[str],
        stop: asyncio.Event,
        interval_s: float = GAUGES_INTERVAL_S,
    ) -> None:
        """Read the gauges at once and then every ``interval_s`` until ``stop`` is set; a failed
        read is logged, counted and tried again at the next interval (the gauges keep their
        values meanwhile)."""
        while not stop.is_set():
            try:
                self.cluster(await broker.cluster_gauges_async(queues))
            except Exception as exc:
                self.database_error("gauges", exc)
                logger.warning("metrics_read_failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    # -- serving -----------------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the port (the one
        the system chose for ``port`` 0).

        Raises RuntimeError when the address cannot be bound (a port in use).
        """
        # Imported by __init__ already (the optional extra; see there).
        from prometheus_client import start_http_server

        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise RuntimeError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self._server = server
        return server.server_port

    async def close(self) -> None:
        """Stop serving (the server thread's poll may take half a second: off the loop)."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
