"""Claim budget planning: how many tasks one claim pass may take from each queue (pure, no I/O).

Rules (see docs/worker.md):

- the pass budget is the worker's free capacity (``local_budget``), lowered to what
  ``cluster_wide_cap`` leaves free cluster-wide (RUNNING + CLAIMED of every queue);
- queues are visited most urgent first (ascending priority; ties keep the configured order), and
  each queue takes at most the budget still left, so an urgent queue is filled before a less urgent
  one;
- per queue and pass at most ``max_claim_batch`` tasks (in both queue modes; <= 0 disables it);
- a queue with ``max_concurrency`` takes at most what its cluster-wide limit leaves free: in-flight
  is RUNNING + CLAIMED in hard-cap mode, RUNNING only in soft-cap (prefetch) mode.

The broker reads the in-flight counts under the claim advisory lock, calls :func:`plan_claims`, then
claims ``min(limit, budget left)`` rows per queue in the planned order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class QueueClaimSpec:
    """A queue served by a worker: its priority (1 = most urgent) and cluster-wide concurrency
    limit."""

    name: str
    priority: int = 100
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What one claim pass of a worker may take.

    ``local_budget`` is the worker's free capacity, already computed by the worker (hard cap:
    processes - running - claimed; soft cap: processes + prefetch - running). ``max_claim_batch``
    caps each queue per pass in both queue modes (0 or less: no per-queue cap). ``cluster_wide_cap``
    caps RUNNING + CLAIMED across the cluster. ``soft_cap`` selects prefetch mode, where claims
    carry a lease of ``claim_lease_ms`` and only RUNNING tasks count as in flight for the queue
    limits. With ``task_names``, only tasks of those names are claimed (the free slots of children
    that run async tasks take async tasks only). ``limits`` names, per queue, the rate and
    concurrency limits its tasks may be under: those queues are claimed through the limited
    claim (``broker/limits.py``).
    """

    queues: Sequence[QueueClaimSpec]
    local_budget: int
    max_claim_batch: int = 2
    cluster_wide_cap: int | None = None
    soft_cap: bool = False
    claim_lease_ms: int | None = None
    task_names: Sequence[str] | None = None
    limits: Mapping[str, Sequence[str]] = field(default_factory=dict[str, Sequence[str]])


@dataclass(frozen=True, slots=True)
class InFlight:
    """Cluster-wide counts of one queue's tasks that occupy capacity."""

    running: int = 0
    claimed: int = 0


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """The budget of one claim pass: ``total`` tasks at most, and a per-queue ceiling in claim
    order."""

    total: int
    queue_limits: tuple[tuple[str, int], ...]


def needs_cluster_counts(request: ClaimRequest) -> bool:
    """True when a cluster-wide limit applies, so the pass must lock and count in-flight tasks
    first."""
    return request.cluster_wide_cap is not None or any(
        q.max_concurrency is not None for q in request.queues
    )


def claim_order(queues: Sequence[QueueClaimSpec]) -> list[QueueClaimSpec]:
    """Queues most urgent first: ascending priority, configured order among equals (stable sort)."""
    seen: set[str] = set()
    unique: list[QueueClaimSpec] = []
    for queue in queues:
        if queue.name not in seen:
            seen.add(queue.name)
            unique.append(queue)
    return sorted(unique, key=lambda q: q.priority)


def plan_claims(request: ClaimRequest, in_flight: Mapping[str, InFlight]) -> ClaimPlan:
    """Budget of one claim pass given the cluster's in-flight counts per queue (see module
    docstring).

    ``in_flight`` may be empty when :func:`needs_cluster_counts` is False (the counts are then
    unused).
    """
    total = max(0, request.local_budget)
    if request.cluster_wide_cap is not None:
        used = sum(f.running + f.claimed for f in in_flight.values())
        total = min(total, max(0, request.cluster_wide_cap - used))
    limits: list[tuple[str, int]] = []
    for queue in claim_order(request.queues):
        limit = total
        if request.max_claim_batch > 0:
            limit = min(limit, request.max_claim_batch)
        if queue.max_concurrency is not None:
            counts = in_flight.get(queue.name, InFlight())
            busy = counts.running if request.soft_cap else counts.running + counts.claimed
            limit = min(limit, max(0, queue.max_concurrency - busy))
        limits.append((queue.name, limit))
    return ClaimPlan(total=total, queue_limits=tuple(limits))


def simulate_pass(plan: ClaimPlan, available: Mapping[str, int]) -> dict[str, int]:
    """What a pass following ``plan`` claims when ``available[q]`` rows are claimable in queue
    ``q``.

    Mirrors the broker's loop (``min(limit, budget left, rows found)`` per queue, in order); used to
    document and test the planning rules end to end without a database.
    """
    remaining = plan.total
    claimed: dict[str, int] = {}
    for name, limit in plan.queue_limits:
        if remaining <= 0:
            break
        n = min(limit, remaining, max(0, available.get(name, 0)))
        if n > 0:
            claimed[name] = n
            remaining -= n
    return claimed
