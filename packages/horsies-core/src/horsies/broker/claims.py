"""Claiming: PENDING -> CLAIMED for a worker (one pass per call, caps planned by
:mod:`horsies.broker.claim_plan`), and CLAIMED -> RUNNING when a claim is handed to a child."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from horsies.broker.claim_plan import ClaimRequest, InFlight, needs_cluster_counts, plan_claims
from horsies.broker.errors import BrokerError
from horsies.broker.finish import log_lost
from horsies.broker.limits import limited_claim_only_query
from horsies.broker.locks import CLAIM_LOCK_KEY
from horsies.broker.programs import Program, Run
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query, together
from horsies.logs import get_logger

_log = get_logger("broker")


AttemptKey = tuple[str, int]
"""(task id, attempt): one claim of a task. Every write a worker makes for a task it claimed names
the attempt, and changes nothing once the row has moved on to another attempt."""

Start = tuple[str, int, int]
"""(task id, attempt, child pid): a claim to start in that child."""


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task row this worker just moved to CLAIMED; ``args``/``kwargs``/``task_options`` are raw
    JSON text; ``workflow_id`` is set for a workflow node's task; ``attempt`` is this claim's
    fencing token (see :data:`AttemptKey`)."""

    id: str
    task_name: str
    queue_name: str
    priority: int
    args: str | None
    kwargs: str | None
    retry_count: int
    max_retries: int
    task_options: str | None
    sent_at: datetime
    workflow_id: str | None = None
    attempt: int = 0

    @property
    def key(self) -> AttemptKey:
        """This claim's (task id, attempt)."""
        return (self.id, self.attempt)


# The settings every transaction that claims runs under (TASK_PLANS_GENERIC_IN_TRANSACTION says
# why): the claim pass's here, and the worker exchange's (broker/exchange.py).
CLAIM_PLAN_SETTINGS: Final = Query(task_sql.TASK_PLANS_GENERIC_IN_TRANSACTION, rows="none")


def claim_op(worker_id: str, request: ClaimRequest) -> Op[list[ClaimedTask]]:
    """One claim pass (in a transaction): the claims' plan settings, lock + count if a cluster
    cap applies, plan, claim."""
    in_flight: dict[str, InFlight] = {}
    if request.local_budget <= 0:
        return []
    # The settings ride in the pass's first round trip, whichever statement that is.
    first: tuple[Query, ...] = (CLAIM_PLAN_SETTINGS,)
    if needs_cluster_counts(request):
        # One round trip for all: the count runs after the lock is granted.
        *_, counts = yield from together(
            (
                *first,
                Query(task_sql.TASK_CLAIM_LOCK, {"key": CLAIM_LOCK_KEY}),
                Query(task_sql.TASK_COUNT_IN_FLIGHT),
            )
        )
        first = ()
        in_flight = {q: InFlight(running=r, claimed=c) for q, r, c in counts.rows}
    plan = plan_claims(request, in_flight)
    lease_ms = request.claim_lease_ms if request.soft_cap else None
    remaining = plan.total
    claimed: list[ClaimedTask] = []
    for queue_name, limit in plan.queue_limits:
        if remaining <= 0:
            break
        n = min(limit, remaining)
        if n <= 0:
            continue
        *_, res = yield from together(
            (*first, _claim_query(worker_id, request, queue_name, n, lease_ms))
        )
        first = ()
        rows = claimed_rows(r[:12] for r in res.rows if r[0] is not None)
        claimed.extend(rows)
        remaining -= len(rows)
    return claimed


def _claim_query(
    worker_id: str, request: ClaimRequest, queue_name: str, n: int, lease_ms: int | None
) -> Query:
    """One queue's claim of up to ``n`` tasks (through the limited claim when the request names
    limits for the queue: a rate-limited key's wake row is then skipped, the poll covers it)."""
    limit_names = request.limits.get(queue_name)
    if limit_names:
        return limited_claim_only_query(
            worker_id,
            queue_name,
            n,
            lease_ms,
            limit_names=limit_names,
            task_names=request.task_names,
        )
    params: dict[str, object] = {
        "queue_name": queue_name,
        "limit": n,
        "worker_id": worker_id,
        "lease_ms": lease_ms,
    }
    if request.task_names is None:
        return Query(task_sql.TASK_CLAIM_AVAILABLE, params)
    params["task_names"] = list(request.task_names)
    return Query(task_sql.TASK_CLAIM_AVAILABLE_OF_NAMES, params)


def claimed_rows(rows: Iterable[Sequence[Any]]) -> list[ClaimedTask]:
    return sorted((ClaimedTask(*r) for r in rows), key=lambda t: (t.priority, t.sent_at, t.id))


def start_query(worker_id: str, hostname: str, starts: Sequence[Start], *, resume: bool) -> Query:
    """The statement of :func:`start_op` (also sent within the prefetch exchange)."""
    return Query(
        task_sql.TASK_START_IF_CLAIMED_MANY,
        {
            "ids": [task_id for task_id, _, _ in starts],
            "attempts": [attempt for _, attempt, _ in starts],
            "pids": [pid for _, _, pid in starts],
            "hostname": hostname,
            "worker_id": worker_id,
            "resume": resume,
        },
    )


def started_keys(starts: Sequence[Start], rows: Iterable[Sequence[Any]]) -> set[AttemptKey]:
    """The claims a start statement started (its rows), the others logged as lost."""
    started = {(r[0], int(r[1])) for r in rows}
    log_lost(
        "task_start_lost",
        ((t, a) for t, a, _ in starts),
        started,
        "no longer CLAIMED by this worker in this attempt",
    )
    return started


def start_op(
    worker_id: str, hostname: str, starts: Sequence[Start], *, resume: bool = False
) -> Op[set[AttemptKey]]:
    """CLAIMED -> RUNNING for (task id, attempt, child pid) triples; returns the claims actually
    started.

    ``resume``: this repeats a call whose connection was lost, so rows it had already started
    (RUNNING for this worker, attempt and pid) count as started."""
    if not starts:
        return set()
    res = yield start_query(worker_id, hostname, starts, resume=resume)
    return started_keys(starts, res.rows)


_START_ATTEMPTS: Final = 3
"""Attempts of a start whose connection is lost mid-statement."""


def start_program(
    worker_id: str, hostname: str, starts: Sequence[Start]
) -> Program[set[AttemptKey]]:
    """:func:`start_op`, repeated on a new connection when its connection is lost mid-statement:
    it may have committed, and a plain repeat would then find the rows RUNNING and report them lost
    although nobody runs them, so the repeat runs in resume mode, which counts the rows the lost
    attempt started. A started task is never reported lost."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            started: set[AttemptKey] = yield Run(
                start_op(worker_id, hostname, starts, resume=attempt > 1), "start_tasks"
            )
            return started
        except BrokerError as exc:
            if not exc.connection_lost or attempt == _START_ATTEMPTS:
                raise
            _log.warning("%s; repeating it on a new connection", exc)
    raise AssertionError("unreachable")
