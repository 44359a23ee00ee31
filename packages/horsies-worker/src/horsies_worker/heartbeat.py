"""Heartbeat: one ``write_heartbeats`` call per interval for every task this worker holds.

Claimer beats cover tasks in CLAIMED (held locally, not yet started); runner beats cover tasks
running in children, with sender ``<worker id>:<child pid>``, and finished tasks whose outcome the
worker has not written yet (their rows are still RUNNING), with the main process's pid. Both are
written by the main process, so a child never touches the database for bookkeeping; a dead child
is detected through its process sentinel, and heartbeats only matter when the whole worker is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from horsies.broker.claims import AttemptKey, Start
from horsies.logs import get_logger

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker

    from horsies_worker.identity import WorkerIdentity
    from horsies_worker.metrics import WorkerMetrics

logger = get_logger("worker")

HeartbeatSource = Callable[[], tuple[Sequence[AttemptKey], Sequence[Start]]]
"""Returns (claims held, (task id, attempt, child pid) of running tasks) at the moment of the
beat."""


@dataclass(eq=False)
class Heartbeater:
    """Writes claimer and runner heartbeats, each at its own interval, in one statement."""

    broker: PostgresBroker
    identity: WorkerIdentity
    claimer_interval_s: float
    runner_interval_s: float
    source: HeartbeatSource
    on_stop: Callable[[list[str]], None]
    """Called with the running tasks whose stop was requested (the answer of each runner beat:
    a stop whose notification was missed is still seen)."""
    metrics: WorkerMetrics | None = None
    """Counts the beats that fail; None when metrics are off."""

    async def beat(self, *, claimer: bool = True, runner: bool = True) -> None:
        """Write one heartbeat statement now for the selected roles (nothing if no tasks)."""
        claimed, running = self.source()
        claimed_ids = list(claimed) if claimer else []
        running_pairs = list(running) if runner else []
        if not claimed_ids and not running_pairs:
            return
        me = self.identity
        to_stop = await self.broker.write_heartbeats_async(
            me.worker_id, me.hostname, me.pid, claimed_ids, running_pairs
        )
        if to_stop:
            self.on_stop(to_stop)

    async def run(self, stop: asyncio.Event) -> None:
        """Beat immediately, then on every due interval until ``stop`` is set; errors are logged."""
        now = time.monotonic()
        next_claimer = now
        next_runner = now
        while not stop.is_set():
            now = time.monotonic()
            claimer_due = now >= next_claimer
            runner_due = now >= next_runner
            if claimer_due or runner_due:
                try:
                    await self.beat(claimer=claimer_due, runner=runner_due)
                except Exception as exc:
                    if self.metrics is not None:
                        self.metrics.database_error("heartbeat", exc)
                    logger.error("heartbeat_failed: %s", exc)
                if claimer_due:
                    next_claimer = now + self.claimer_interval_s
                if runner_due:
                    next_runner = now + self.runner_interval_s
            timeout = max(0.0, min(next_claimer, next_runner) - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
