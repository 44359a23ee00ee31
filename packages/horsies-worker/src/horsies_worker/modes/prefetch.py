"""Prefetch (soft-cap) mode without cluster-wide caps: claims ahead of the free children, with a
lease, so that short tasks never wait for a round trip.

One round trip per pass (``broker.prefetch_exchange_async``), in one transaction: write results,
start the claims handed to children (CLAIMED -> RUNNING, lease checked), fill other free child
slots straight from PENDING (and the free slots of children running async tasks with async
tasks), and claim more with a lease. Passes run back to back while children
have room. While tasks are short, each child holds a small queue of started tasks
(``WorkerState.child_depth``).
"""

from __future__ import annotations

import time

from horsies.logs import get_logger

from horsies_worker.children import Assignment, ChildProcess
from horsies_worker.modes.base import ClaimMode
from horsies_worker.state import WorkerState

__all__ = ["PrefetchMode"]

logger = get_logger("worker")


class PrefetchMode(ClaimMode):
    """Leased claims ahead of the children, outcomes and starts in the same round trip."""

    writes_outcomes = True

    def __init__(self, state: WorkerState) -> None:
        super().__init__(state)
        self._async_names = sorted(state.async_names)  # as the exchange sends them, once

    async def run_pass(self) -> None:
        """One pass: write the queued outcomes, start waiting claims on children with room, and
        claim more, in one round trip. A claim waits until a quarter of the budget is free unless
        nothing waits locally."""
        state = self._state
        pool, completer = state.pool, state.completer
        pairs: list[tuple[ChildProcess, Assignment]] = []
        direct_pids: list[int] = []
        async_pids: list[int] = []
        budget = 0
        if not state.stop.is_set():
            if state.dispatch_due():
                pairs = state.reserve_children()
            budget = state.budget()
            if not state.pending:
                # Free child slots beyond the waiting claims: filled straight from PENDING.
                direct_pids = self._free_slot_pids()[:budget]
            cfg = state.config
            rest = budget - len(direct_pids)
            if state.pending and rest * 4 < cfg.processes + cfg.prefetch_buffer:
                budget = len(direct_pids)  # claim once a quarter of the budget is free
            # The free slots of children running async tasks: filled with async tasks from
            # PENDING (the async tasks waiting here took theirs above).
            async_pids = [child.pid for child in state.async_slots()]
            budget += len(async_pids)
        batch = completer.take()
        release = state.orphaned_claims
        keep = state.claims_to_reconcile()
        if not pairs and not batch and budget <= 0 and keep is None:
            return
        metrics = state.metrics if pairs or budget > 0 else None
        began = time.monotonic() if metrics is not None else 0.0
        try:
            exchange = await state.broker.prefetch_exchange_async(
                state.identity.worker_id,
                state.identity.hostname,
                outcomes=batch,
                starts=[(*a.task.key, c.pid) for c, a in pairs],
                direct_pids=direct_pids,
                request=state.claimer.request(budget) if budget > 0 else None,
                release=release,
                keep_running=keep,
                async_pids=async_pids,
                async_names=self._async_names,
            )
        except BaseException:
            completer.restore(batch)
            if pairs or direct_pids or async_pids:
                # The starts may have committed without the reply: these tasks are no longer
                # ours to run; the next exchange gives them back.
                for child, assignment in pairs:
                    child.unreserve(assignment)
                state.orphaned_claims = [*release, *(a.task.key for _, a in pairs)]
                state.reconcile_needed = True
            raise
        if metrics is not None:
            metrics.claimed(time.monotonic() - began)
        if keep is not None:
            state.reconciled()
        completer.settle(batch, exchange.finished, exchange.undecided)
        state.wake_later(exchange.wake_in_s)
        if exchange.claimed:
            logger.debug("tasks_claimed: %s (budget %s)", len(exchange.claimed), budget)
            state.add_claims(exchange.claimed)
        state.hand_over_claims(pairs, exchange.started)
        if exchange.direct:
            state.hand_over(pool.children, exchange.direct)
        if (
            state.dispatch_due()
            or completer.pending
            or len(exchange.direct) == len(direct_pids) + len(async_pids) > 0
        ):
            state.wake.set()

    def _free_slot_pids(self) -> list[int]:
        """One child pid per free slot, level by level (idle children first), so that the most
        urgent tasks go where they start soonest."""
        state = self._state
        depth = state.child_depth()
        children = state.pool.children
        held = {child.pid: len(child.assignments) for child in children}
        pids: list[int] = []
        for level in range(depth):
            pids += [
                child.pid
                for child in children
                if child.free_slots(depth) and held[child.pid] <= level
            ]
        return pids
