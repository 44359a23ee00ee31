"""The claim mode of cluster-wide caps (``cluster_wide_cap``, a queue's ``max_concurrency``):
a CLAIMED phase under the cluster claim lock.

A claim pass counts the in-flight tasks of the cluster under the claim advisory lock and claims
what the caps leave (``broker.claim_async``), then likewise async tasks for the free slots of
children running async tasks; the tasks that have a child with room are started in one
``broker.start_async`` call. Outcomes are written by the completer's own writer, which also
wakes the workers held back by a cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from horsies.logs import get_logger

from horsies_worker.modes.base import ClaimMode
from horsies_worker.state import WorkerState

__all__ = ["ClaimedMode"]

logger = get_logger("worker")


class ClaimedMode(ClaimMode):
    """Claim under the cluster's caps, then start what the children can take."""

    writes_outcomes = False

    def __init__(self, state: WorkerState) -> None:
        super().__init__(state)
        self._async_names = sorted(state.async_names)  # as the claims send them, once

    def _claim_budget(self) -> int:
        """How many tasks a pass claims now: the free budget once it is a quarter of what this
        worker may hold (or at once when nothing waits locally), else 0."""
        state = self._state
        budget = state.budget()
        cfg = state.config
        if state.pending and budget * 4 < cfg.processes + cfg.prefetch_buffer:
            return 0
        return budget

    async def run_pass(self) -> None:
        """Start waiting tasks on children with room and, at the same time, claim the free budget
        (and async tasks for the free slots of children running async tasks); then start what the
        claims brought if a child has room.

        The start and the claim are independent (different rows, different connections), so they
        share the wait for their commits.
        """
        state = self._state
        stopping = state.stop.is_set()
        budget = 0 if stopping else self._claim_budget()
        async_budget = 0 if stopping else state.async_budget()
        if budget <= 0 and async_budget <= 0:
            if state.dispatch_due():
                await self._dispatch()
            return
        jobs: list[Awaitable[Any]] = [self._claim(budget, async_budget)]
        if state.dispatch_due():
            jobs.append(self._dispatch())
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        for failure in outcomes:
            if isinstance(failure, BaseException):
                raise failure
        if state.dispatch_due():
            await self._dispatch()
        # A full batch may mean more work is waiting (max_claim_batch, several queues): go again.
        if outcomes[0] and state.budget():
            state.wake.set()

    async def _claim(self, budget: int, async_budget: int) -> int:
        """Claim ``budget`` tasks of any kind, then ``async_budget`` async ones, each claim queued
        locally as soon as it commits; returns how many were claimed."""
        state = self._state
        total = 0
        for n, names in ((budget, None), (async_budget, self._async_names)):
            metrics = state.metrics if n > 0 else None
            began = time.monotonic() if metrics is not None else 0.0
            claimed = await state.claimer.claim(n, names)
            if metrics is not None:
                metrics.claimed(time.monotonic() - began)
            if claimed:
                logger.debug("tasks_claimed: %s (budget %s)", len(claimed), n)
                state.add_claims(claimed)
                total += len(claimed)
        return total

    async def _dispatch(self) -> None:
        """Start as many waiting tasks as the children have free slots, in one call."""
        state = self._state
        if not state.pending:
            return
        pairs = state.reserve_children()
        if not pairs:
            return
        try:
            started = await state.broker.start_async(
                state.identity.worker_id,
                state.identity.hostname,
                [(*a.task.key, c.pid) for c, a in pairs],
            )
        except BaseException:
            for child, assignment in reversed(pairs):
                child.unreserve(assignment)
                state.pending.appendleft(assignment.task)
            raise
        state.hand_over_claims(pairs, started)
        if state.dispatch_due():
            state.wake.set()
