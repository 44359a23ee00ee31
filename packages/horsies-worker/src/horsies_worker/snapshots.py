"""Snapshots: one ``horsies_worker_states`` row every 5 s, with psutil figures, and a last one
marked stopped when the worker shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import psutil
from horsies.broker.heartbeats import WorkerStateRow
from horsies.config import QueueMode
from horsies.logs import get_logger

from horsies_worker.config import SNAPSHOT_INTERVAL_S, WorkerConfig

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker

    from horsies_worker.identity import WorkerIdentity
    from horsies_worker.metrics import WorkerMetrics

logger = get_logger("worker")

CountsSource = Callable[[], tuple[int, int]]
"""Returns (tasks running, tasks claimed) of this worker."""


def recovery_json(config: WorkerConfig) -> dict[str, Any]:
    """All seven recovery fields as a JSON-able dict."""
    recovery = config.recovery
    return {
        "auto_requeue_stale_claimed": recovery.auto_requeue_stale_claimed,
        "claimed_stale_threshold_ms": recovery.claimed_stale_threshold_ms,
        "auto_fail_stale_running": recovery.auto_fail_stale_running,
        "running_stale_threshold_ms": recovery.running_stale_threshold_ms,
        "check_interval_ms": recovery.check_interval_ms,
        "runner_heartbeat_interval_ms": recovery.runner_heartbeat_interval_ms,
        "claimer_heartbeat_interval_ms": recovery.claimer_heartbeat_interval_ms,
    }


@dataclass(eq=False)
class SnapshotWriter:
    """Builds and inserts worker-state rows; failures are logged and ignored."""

    broker: PostgresBroker
    config: WorkerConfig
    identity: WorkerIdentity
    counts: CountsSource
    interval_s: float = SNAPSHOT_INTERVAL_S
    limits: Mapping[str, Sequence[str]] = field(default_factory=lambda: {})
    """Per served queue, the limits this worker enforces there (set at start-up, before the
    first snapshot: see ``horsies_worker.limits``)."""
    metrics: WorkerMetrics | None = None
    """Counts the inserts that fail; None when metrics are off."""
    _process: psutil.Process = field(init=False, default_factory=psutil.Process)
    _fixed: WorkerStateRow = field(init=False)

    def __post_init__(self) -> None:
        self._fixed = self._fixed_row()
        # The first cpu_percent(None) call only starts the measurement window.
        with contextlib.suppress(Exception):
            self._process.cpu_percent(None)

    def _fixed_row(self) -> WorkerStateRow:
        """What every snapshot of this worker says alike: who it is (the pid of the process whose
        figures the snapshots carry) and how it is configured."""
        cfg, me = self.config, self.identity
        custom = cfg.queue_mode == QueueMode.CUSTOM
        return WorkerStateRow(
            worker_id=me.worker_id,
            hostname=me.hostname,
            pid=self._process.pid,
            processes=cfg.processes,
            async_concurrency=cfg.async_concurrency,
            limits={queue: tuple(names) for queue, names in self.limits.items()},
            max_claim_batch=cfg.max_claim_batch,
            max_claim_per_worker=cfg.effective_max_claim_per_worker,
            cluster_wide_cap=cfg.cluster_wide_cap,
            queues=cfg.queue_names,
            queue_priorities={q.name: q.priority for q in cfg.queues} if custom else None,
            queue_max_concurrency=(
                {q.name: q.max_concurrency for q in cfg.queues} if custom else None
            ),
            recovery_config=recovery_json(cfg),
            tasks_running=0,
            tasks_claimed=0,
            worker_started_at=me.started_at,
        )

    def build(self) -> WorkerStateRow:
        """Build the current snapshot row: the fixed part with the task counts and the figures of
        this process now (CPU is averaged since the previous snapshot)."""
        running, claimed = self.counts()
        memory_mb: float | None = None
        memory_percent: float | None = None
        cpu_percent: float | None = None
        with contextlib.suppress(Exception):
            memory_mb = self._process.memory_info().rss / (1024 * 1024)
            memory_percent = float(self._process.memory_percent())
            # Non-blocking: the average over the whole interval is a better figure than a 0.1 s
            # sample, and it never stalls the event loop.
            cpu_percent = float(self._process.cpu_percent(None))
        return replace(
            self._fixed,
            tasks_running=running,
            tasks_claimed=claimed,
            memory_usage_mb=memory_mb,
            memory_percent=memory_percent,
            cpu_percent=cpu_percent,
        )

    async def write_once(self) -> None:
        """Insert one snapshot now."""
        await self.broker.insert_worker_state_async(self.build())

    async def write_stopped(self) -> None:
        """Insert the worker's last snapshot, marked stopped: it holds no task any more (what it
        could not finish or write is left to the reapers), and monitors drop it at once."""
        last = replace(self.build(), tasks_running=0, tasks_claimed=0, stopped=True)
        await self.broker.insert_worker_state_async(last)

    async def run(self, stop: asyncio.Event) -> None:
        """Insert a snapshot at once and then every interval until ``stop`` is set, then the
        stopped one.

        ``stop`` is set when the worker shuts down (after its tasks were drained), so the stopped
        snapshot is written here, by the loop that writes the others, and no periodic one can
        follow it."""
        while not stop.is_set():
            try:
                await self.write_once()
            except Exception as exc:
                self._failed(exc)
                logger.warning("worker_state_snapshot_failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
        try:
            await self.write_stopped()
        except Exception as exc:
            self._failed(exc)
            logger.warning(
                "worker_stopped_snapshot_failed: %s (monitors will take this worker for dead "
                "once its snapshots are stale)",
                exc,
            )

    def _failed(self, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.database_error("snapshot", exc)
