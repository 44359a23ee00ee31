"""Prefetch (soft-cap) mode's hot path: outcomes, starts of held claims, direct starts and new
leased claims in one transaction, usually one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from horsies.broker.channels import wake_workers_query
from horsies.broker.claim_plan import ClaimRequest, needs_cluster_counts, plan_claims
from horsies.broker.claims import (
    AttemptKey,
    ClaimedTask,
    Start,
    claimed_rows,
    start_query,
    started_keys,
)
from horsies.broker.exchange import (
    StartedTask,
    async_claim_limits,
    claim_and_start_more,
    claim_and_start_query,
    direct_claim_limits,
    exchange_head,
    started_rows,
)
from horsies.broker.finish import TaskOutcome
from horsies.broker.handback import release_query, requeue_untracked_query
from horsies.broker.hooks import NodeRef, WorkflowEngine
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query


@dataclass(frozen=True, slots=True)
class PrefetchExchange:
    """What one `PostgresBroker.prefetch_exchange_async` call did (prefetch mode).

    ``finished``: ids of the outcomes written; ``started``: the given claims now RUNNING
    (the others were lost: lease expired and taken, or requeued); ``direct``: tasks moved from
    PENDING straight to RUNNING for the given child pids; ``claimed``: tasks newly CLAIMED by this
    worker with a lease, most urgent first; ``undecided``: workflow nodes left waiting for a
    decision; ``wake_in_s``: when a task held back by a rate limit may start, if one is. Tasks
    under a limit are never prefetched: they only start straight into free slots.
    """

    finished: set[str] = field(default_factory=set[str])
    started: set[AttemptKey] = field(default_factory=set[AttemptKey])
    direct: list[StartedTask] = field(default_factory=list[StartedTask])
    claimed: list[ClaimedTask] = field(default_factory=list[ClaimedTask])
    undecided: list[NodeRef] = field(default_factory=list[NodeRef])
    wake_in_s: float | None = None


def prefetch_exchange_op(
    worker_id: str,
    hostname: str,
    *,
    outcomes: Sequence[TaskOutcome],
    starts: Sequence[Start],
    direct_pids: Sequence[int] = (),
    request: ClaimRequest | None,
    release: Sequence[AttemptKey] = (),
    keep_running: Sequence[AttemptKey] | None = None,
    engine: WorkflowEngine | None = None,
    async_pids: Sequence[int] = (),
    async_names: Sequence[str] = (),
) -> Op[PrefetchExchange]:
    """Prefetch (soft-cap) mode's hot path, without cluster-wide caps, in one transaction and
    usually one round trip: write ``outcomes``, start the claims handed to children (``starts``:
    (task id, attempt, child pid), CLAIMED -> RUNNING while the lease holds), fill the other free
    child slots straight from PENDING (``direct_pids``: one child pid per slot, in the order the
    most urgent tasks should go; PENDING -> RUNNING, no CLAIMED phase), fill the free slots of
    children running async tasks the same way with tasks of ``async_names`` (``async_pids``: a
    pid once per slot) and claim what is left of ``request.local_budget`` after those slots
    (PENDING -> CLAIMED with a lease).

    Run it in a transaction when :func:`prefetch_exchange_needs_transaction` says so. After a call
    that failed with starts in it (it may have committed without the reply arriving), the worker
    no longer holds those tasks: the next call passes them as ``release`` (claims it never started
    go back to PENDING) and every claim it still holds as ``keep_running`` (its other RUNNING rows
    — started, but never handed to a child — go back to PENDING too).
    """
    if request is not None and needs_cluster_counts(request):
        raise ValueError("prefetch_exchange_op claims only without cluster-wide caps")
    durable = bool(outcomes) or bool(release) or keep_running is not None
    batch = exchange_head(outcomes, worker_id, engine, durable=durable)
    first = batch.statements
    if keep_running is not None or release:
        if keep_running is not None:
            first.append(requeue_untracked_query(worker_id, keep_running, outcomes))
        if release:
            first.append(release_query(worker_id, release))
        first.append(wake_workers_query("requeued"))
    start_at = len(first)
    if starts:
        first.append(start_query(worker_id, hostname, starts, resume=False))
    direct = direct_claim_limits(request, len(direct_pids)) if direct_pids and request else []
    limited = request.limits if request is not None else None
    direct_at = len(first)
    if direct:
        first.append(
            claim_and_start_query(worker_id, hostname, direct[0][0], direct_pids, limited=limited)
        )
    async_direct = prefetch_async_limits(request, async_pids, async_names)
    async_at = len(first)
    if async_direct:
        queue_name, n = async_direct[0]
        first.append(
            claim_and_start_query(
                worker_id,
                hostname,
                queue_name,
                async_pids[:n],
                task_names=async_names,
                limited=limited,
            )
        )
    total, limits = prefetch_claim_limits(request, len(direct_pids) + len(async_pids))
    claim_at = len(first)
    if limits:
        first.append(
            prefetch_claim_query(worker_id, request, limits[0][0], min(limits[0][1], total))
        )
    if len(first) == 1:
        return PrefetchExchange()
    parts, done = yield from batch.send(engine)
    started: set[AttemptKey] = set()
    if starts:
        started = started_keys(starts, parts[start_at].rows)
    direct_started: list[StartedTask] = []
    wakes: list[float] = []
    if direct:
        direct_started = started_rows(parts[direct_at].rows, wakes)
        yield from claim_and_start_more(
            worker_id, hostname, direct[1:], direct_pids, direct_started, limited=limited,
            wakes=wakes,
        )  # fmt: skip
    if async_direct:
        async_started = started_rows(parts[async_at].rows, wakes)
        yield from claim_and_start_more(
            worker_id,
            hostname,
            async_direct[1:],
            async_pids,
            async_started,
            task_names=async_names,
            limited=limited,
            wakes=wakes,
        )
        direct_started.extend(async_started)
    claimed: list[ClaimedTask] = []
    if limits:
        claimed.extend(claimed_rows(parts[claim_at].rows))
        for queue_name, limit in limits[1:]:
            n = min(limit, total - len(claimed))
            if n <= 0:
                break
            res = yield prefetch_claim_query(worker_id, request, queue_name, n)
            claimed.extend(claimed_rows(res.rows))
    return PrefetchExchange(
        finished=done.ids,
        started=started,
        direct=direct_started,
        claimed=claimed,
        undecided=done.undecided,
        wake_in_s=min(wakes, default=None),
    )


def prefetch_claim_limits(
    request: ClaimRequest | None, direct_slots: int = 0
) -> tuple[int, list[tuple[str, int]]]:
    """The total a prefetch claim may take (the budget left after ``direct_slots``) and its
    (queue, ceiling) pairs in claim order."""
    if request is None or request.local_budget <= direct_slots:
        return 0, []
    plan = plan_claims(request, {})
    total = min(plan.total, request.local_budget - direct_slots)
    return total, [(q, n) for q, n in plan.queue_limits if n > 0]


def prefetch_async_limits(
    request: ClaimRequest | None, async_pids: Sequence[int], async_names: Sequence[str]
) -> list[tuple[str, int]]:
    """(queue, ceiling) pairs of the direct start of async tasks for the free slots ``async_pids``
    (none without a request, slots or async tasks)."""
    if request is None or not async_pids or not async_names:
        return []
    return async_claim_limits(request, len(async_pids))


def prefetch_claim_query(
    worker_id: str, request: ClaimRequest | None, queue_name: str, limit: int
) -> Query:
    return Query(
        task_sql.TASK_CLAIM_AVAILABLE,
        {
            "queue_name": queue_name,
            "limit": limit,
            "worker_id": worker_id,
            "lease_ms": request.claim_lease_ms if request is not None else None,
        },
    )


def prefetch_exchange_needs_transaction(
    request: ClaimRequest | None,
    direct_slots: int,
    outcomes: Sequence[TaskOutcome] = (),
    async_slots: int = 0,
) -> bool:
    """True when :func:`prefetch_exchange_op` may take more than one round trip (claims in several
    queues, or workflow outcomes to advance): then it must run in an explicit transaction."""
    if any(o.workflow_id is not None for o in outcomes):
        return True
    if direct_slots and request is not None and len(direct_claim_limits(request, direct_slots)) > 1:
        return True
    if async_slots and request is not None and len(async_claim_limits(request, async_slots)) > 1:
        return True
    return len(prefetch_claim_limits(request, direct_slots + async_slots)[1]) > 1
