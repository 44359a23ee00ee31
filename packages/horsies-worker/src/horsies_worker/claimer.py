"""Claimer: how many tasks this worker may claim now, and the claim call itself.

The budget math is pure so it can be unit-tested; the cluster-wide parts (queue ``max_concurrency``,
``cluster_wide_cap``, the advisory lock) are enforced by the broker inside the claim transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from horsies.broker.claim_plan import ClaimRequest, QueueClaimSpec

from horsies_worker.config import WorkerConfig

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker
    from horsies.broker.claims import ClaimedTask


def max_claimed(processes: int, prefetch_buffer: int, max_claim_per_worker: int) -> int:
    """Return the cap on this worker's CLAIMED-but-not-running tasks.

    An explicit ``max_claim_per_worker`` (> 0) wins; otherwise ``processes + prefetch_buffer`` in
    soft-cap mode and ``processes`` in hard-cap mode.
    """
    if max_claim_per_worker > 0:
        return max_claim_per_worker
    if prefetch_buffer > 0:
        return processes + prefetch_buffer
    return processes


def local_budget(
    *,
    processes: int,
    prefetch_buffer: int,
    max_claim_per_worker: int,
    running: int,
    claimed: int,
) -> int:
    """Return how many tasks this worker may claim in one pass, before cluster-wide caps.

    Hard-cap mode (``prefetch_buffer == 0``): ``processes - (running + claimed)``.
    Soft-cap mode: ``processes + prefetch_buffer - running``. The claimed-count guard then stops
    claiming once ``claimed >= max_claimed`` and never lets one pass push ``claimed`` above it.
    The result is never negative.
    """
    guard = max_claimed(processes, prefetch_buffer, max_claim_per_worker)
    if claimed >= guard:
        return 0
    if prefetch_buffer > 0:
        budget = processes + prefetch_buffer - running
        # The soft-cap formula ignores what we already hold, so subtract it: ``budget`` is how many
        # tasks this worker may hold in total, not how many more it may fetch.
        budget -= claimed
    else:
        budget = processes - (running + claimed)
    return max(0, min(budget, guard - claimed))


class Claimer:
    """Builds claim requests from the worker configuration and asks the broker for tasks.

    Owned by the worker's claim loop; never called concurrently with itself.
    """

    def __init__(self, broker: PostgresBroker, worker_id: str, config: WorkerConfig) -> None:
        self.limits: Mapping[str, Sequence[str]] = {}
        """Per served queue, the limits its tasks may be under (set at start-up)."""
        self._broker = broker
        self._worker_id = worker_id
        self._config = config
        self._queues = [
            QueueClaimSpec(name=q.name, priority=q.priority, max_concurrency=q.max_concurrency)
            for q in config.queues
        ]

    def budget(self, *, running: int, claimed: int) -> int:
        """Return the local budget for the given in-flight counts of this worker."""
        cfg = self._config
        return local_budget(
            processes=cfg.processes,
            prefetch_buffer=cfg.prefetch_buffer,
            max_claim_per_worker=cfg.max_claim_per_worker,
            running=running,
            claimed=claimed,
        )

    def request(self, budget: int, task_names: Sequence[str] | None = None) -> ClaimRequest:
        """The claim request for ``budget`` tasks across the served queues (of ``task_names``
        only, if given: those fill the free slots of children running async tasks, so no
        per-queue batch applies)."""
        cfg = self._config
        return ClaimRequest(
            queues=self._queues,
            local_budget=budget,
            max_claim_batch=cfg.max_claim_batch if task_names is None else 0,
            cluster_wide_cap=cfg.cluster_wide_cap,
            soft_cap=cfg.soft_cap,
            claim_lease_ms=cfg.claim_lease_ms if cfg.soft_cap else None,
            task_names=task_names,
            limits=self.limits,
        )

    async def claim(
        self, budget: int, task_names: Sequence[str] | None = None
    ) -> list[ClaimedTask]:
        """Claim up to ``budget`` tasks across the served queues (of ``task_names`` only, if
        given) in one broker transaction."""
        if budget <= 0:
            return []
        return await self._broker.claim_async(self._worker_id, self.request(budget, task_names))
