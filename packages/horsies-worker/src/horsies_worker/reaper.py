"""Reaper: periodic stale-task recovery through ``broker.reap``.

Every worker runs one; the broker makes sure only one reaper works at a time cluster-wide, requeues
CLAIMED tasks whose claimer stopped beating and fails RUNNING tasks whose runner heartbeats stopped
(or retries them, when their ``auto_retry_for`` lists ``WORKER_CRASHED``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from horsies.logs import get_logger

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker
    from horsies.config import RecoveryConfig

logger = get_logger("worker")


class Reaper:
    """Calls ``broker.reap(recovery)`` every ``recovery.check_interval_ms``."""

    def __init__(self, broker: PostgresBroker, recovery: RecoveryConfig) -> None:
        self._broker = broker
        self._recovery = recovery

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
                logger.error("reaper_failed: %s", exc)
