"""The default claim mode (hard cap, no cluster-wide cap): the worker's hot path.

One round trip (``broker.exchange_async``) writes the outcomes collected so far and moves up to one
task per idle child from PENDING straight to RUNNING for that child, and one ``async def`` task per
free slot of a child already running async tasks (``--async-concurrency`` per child); the tasks are
then written to the children's pipes. No CLAIMED phase: nothing is held that a child could not
start at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

from horsies.logs import get_logger

from horsies_worker.children import ChildProcess
from horsies_worker.modes.base import ClaimMode
from horsies_worker.state import WorkerState

__all__ = ["DirectStartMode"]

logger = get_logger("worker")

_LINGER_MAX_S: Final = 0.002
"""Tasks that usually run longer than this are never held back to share a round trip."""


class DirectStartMode(ClaimMode):
    """Claim-and-start in one round trip, one task per idle child."""

    writes_outcomes = True

    def __init__(self, state: WorkerState) -> None:
        super().__init__(state)
        self._async_names = sorted(state.async_names)  # as the exchange sends them, once

    async def run_pass(self) -> None:
        """Linger for short tasks, then one exchange."""
        await self._linger()
        await self._exchange()

    async def _linger(self) -> None:
        """Before writing results, give children whose task started a moment ago the chance to
        finish too, so that one round trip serves them all.

        Only when tasks are short (recent execution times below ``_LINGER_MAX_S``): then the
        database round trip and the main loop cost more than the tasks, and serving two children
        per exchange instead of one nearly halves both per task, while a child waits at most about
        two task durations. Longer tasks never wait: each result is written at once.
        """
        state = self._state
        typical = state.runtime_ewma
        if not state.completer.pending or typical is None or typical > _LINGER_MAX_S:
            return
        window = min(_LINGER_MAX_S, 2 * typical)
        while not state.stop.is_set():
            now = time.monotonic()
            young = [
                a.started_monotonic
                for _, a in state.assignments()
                if a.sent and now - a.started_monotonic < window
            ]
            if not young:
                return
            # A result (or any other wake-up) ends the wait early; then look again.
            state.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(young) + window - now):
                    await state.wake.wait()

    async def _exchange(self) -> None:
        """Write the queued outcomes and start a task on every idle child, in one round trip."""
        state = self._state
        pool, completer = state.pool, state.completer
        idle: list[ChildProcess] = []
        slots: list[ChildProcess] = []
        if not state.stop.is_set():
            idle = pool.idle_children()[: state.budget()]
            slots = state.async_slots()
        batch = completer.take()
        keep = state.claims_to_reconcile()
        if not idle and not slots and not batch and keep is None:
            return
        claiming = len(idle) + len(slots)
        metrics = state.metrics if claiming else None
        began = time.monotonic() if metrics is not None else 0.0
        try:
            exchange = await state.broker.exchange_async(
                state.identity.worker_id,
                state.identity.hostname,
                outcomes=batch,
                request=state.claimer.request(claiming) if claiming else None,
                pids=[child.pid for child in idle],
                notify_capacity=False,  # nobody waits for capacity without cluster-wide caps
                keep_running=keep,
                async_pids=[child.pid for child in slots],
                async_names=self._async_names,
            )
        except BaseException:
            completer.restore(batch)
            if claiming:
                state.reconcile_needed = True
            raise
        if metrics is not None:
            metrics.claimed(time.monotonic() - began)
        if keep is not None:
            state.reconciled()
        completer.settle(batch, exchange.finished, exchange.undecided)
        state.wake_later(exchange.wake_in_s)
        if exchange.started:
            logger.debug("tasks_started: %s (idle children %s)", len(exchange.started), len(idle))
            state.hand_over([*idle, *slots], exchange.started)
        if exchange.full and (pool.idle_children() or state.async_slots()):
            state.wake.set()  # the per-queue batch left slots free while tasks may be waiting
        if completer.pending:
            state.wake.set()  # more than one batch of outcomes was queued
