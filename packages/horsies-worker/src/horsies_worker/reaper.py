"""Reaper: periodic stale-task recovery through ``broker.reap``, and retention.

Every worker runs one; the broker makes sure only one reaper works at a time cluster-wide, requeues
CLAIMED tasks whose claimer stopped beating and fails RUNNING tasks whose runner heartbeats stopped
(or retries them, when their ``auto_retry_for`` lists ``WORKER_CRASHED``). Every
``retention.interval_s`` it also prunes what the app's retention no longer keeps, for at most
``retention.max_pass_s`` (one pruner at a time cluster-wide).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from horsies.logs import get_logger

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker
    from horsies.config import RecoveryConfig, RetentionConfig

    from horsies_worker.metrics import WorkerMetrics

logger = get_logger("worker")


class Reaper:
    """Calls ``broker.reap(recovery)`` every ``recovery.check_interval_ms``."""

    def __init__(
        self,
        broker: PostgresBroker,
        recovery: RecoveryConfig,
        retention: RetentionConfig,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._broker = broker
        self._metrics = metrics
        self._recovery = recovery
        self._retention = retention
        self._next_prune = time.monotonic() + retention.interval_s

    async def prune_if_due(self) -> None:
        """Prune for at most ``max_pass_s`` once ``interval_s`` has passed since the last time;
        sooner again while a backlog is left (the pass ran out of time)."""
        retention = self._retention
        if time.monotonic() < self._next_prune:
            return
        report = await self._broker.prune_async(retention, budget_s=retention.max_pass_s)
        backlog = not report.finished and not report.busy
        self._next_prune = time.monotonic() + (0.0 if backlog else retention.interval_s)
        if report.total:
            logger.info(
                "retention_pruned: %s",
                ", ".join(f"{rule}={n}" for rule, n in report.by_rule.items() if n),
            )

    async def reap_once(self) -> None:
        """Run one recovery pass and log what it did."""
        report = await self._broker.reap_async(self._recovery)
        if report.requeued or report.failed or report.retried:
            logger.warning(
                "reaper_recovered: requeued=%s failed=%s retried=%s",
                report.requeued,
                report.failed,
                report.retried,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set; an error in one pass is logged and the loop goes on."""
        interval = self._recovery.check_interval_ms / 1000.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self.reap_once()
            except Exception as exc:
                self._failed("reap", exc)
                logger.error("reaper_failed: %s", exc)
            try:
                await self.prune_if_due()
            except Exception as exc:
                self._failed("prune", exc)
                logger.error("retention_failed: %s", exc)

    def _failed(self, operation: str, exc: Exception) -> None:
        if self._metrics is not None:
            self._metrics.database_error(operation, exc)
