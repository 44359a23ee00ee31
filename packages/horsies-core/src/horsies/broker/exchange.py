"""The hard-cap worker's hot path: one round trip that writes outcomes and moves up to one task per
idle child from PENDING straight to RUNNING for that child."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from horsies.broker.channels import CAPACITY_FREED, wake_workers_query
from horsies.broker.claim_plan import ClaimRequest, needs_cluster_counts, plan_claims
from horsies.broker.claims import CLAIM_PLAN_SETTINGS, AttemptKey, ClaimedTask
from horsies.broker.finish import (
    Finished,
    TaskOutcome,
    finish_query,
    finished_ids,
    workflow_advance,
    workflow_ids_of,
)
from horsies.broker.handback import requeue_untracked_query
from horsies.broker.hooks import NodeRef, WorkflowEngine
from horsies.broker.limits import limited_claim_query
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query, QueryResult, together
from horsies.logs import get_logger

_log = get_logger("broker")


@dataclass(frozen=True, slots=True)
class StartedTask:
    """A task this worker just moved from PENDING straight to RUNNING for the child ``pid``."""

    task: ClaimedTask
    pid: int


@dataclass(frozen=True, slots=True)
class TaskExchange:
    """What one `PostgresBroker.exchange_async` round trip did.

    ``finished``: ids of the outcomes written (the others lost a race and changed nothing);
    ``started``: tasks now RUNNING for the given child pids, most urgent first; ``requeued``: ids of
    untracked RUNNING rows of this worker sent back to PENDING (only when asked to reconcile);
    ``full``: every claim got as many rows as it asked for, so more tasks may be waiting;
    ``undecided``: workflow nodes the advance left waiting for a decision (``hooks.WorkflowHooks``);
    ``wake_in_s``: when a task held back by a rate limit may start, if one is (claim again then).
    """

    finished: set[str] = field(default_factory=set[str])
    started: list[StartedTask] = field(default_factory=list[StartedTask])
    requeued: list[str] = field(default_factory=list[str])
    full: bool = False
    undecided: list[NodeRef] = field(default_factory=list[NodeRef])
    wake_in_s: float | None = None


_PLANS_GENERIC_ASYNC_COMMIT: Final = Query(
    task_sql.TASK_PLANS_GENERIC_ASYNC_COMMIT_IN_TRANSACTION, rows="none"
)


def _exchange_settings(*, durable: bool) -> Query:
    """The first statement of a worker exchange: generic plans, and an asynchronous commit unless
    it is ``durable`` (it writes outcomes or gives tasks back; see the SQL constant)."""
    return CLAIM_PLAN_SETTINGS if durable else _PLANS_GENERIC_ASYNC_COMMIT


def can_start_directly(request: ClaimRequest) -> bool:
    """True when claims may go PENDING -> RUNNING in one statement (TASK_CLAIM_AND_START_AVAILABLE).

    That needs hard-cap mode (soft-cap prefetch holds CLAIMED rows with a lease) and no cluster-wide
    limit (those count in-flight rows under the claim advisory lock, in a transaction, and keep
    the CLAIMED phase).
    """
    return not request.soft_cap and not needs_cluster_counts(request)


def direct_claim_limits(request: ClaimRequest, slots: int) -> list[tuple[str, int]]:
    """(queue, ceiling) pairs of a direct claim for ``slots`` idle children, in claim order."""
    plan = plan_claims(request, {})
    total = min(plan.total, slots)
    return [(q, min(limit, total)) for q, limit in plan.queue_limits if min(limit, total) > 0]


def async_claim_limits(request: ClaimRequest, slots: int) -> list[tuple[str, int]]:
    """(queue, ceiling) pairs of the async-only claim for ``slots`` free slots of busy children:
    those slots are their children's own to fill, so no per-queue batch applies."""
    return direct_claim_limits(replace(request, max_claim_batch=0), slots)


def exchange_needs_transaction(
    request: ClaimRequest | None,
    slots: int,
    outcomes: Sequence[TaskOutcome] = (),
    async_slots: int = 0,
) -> bool:
    """True when :func:`exchange_op` may take more than one statement (claims in several queues,
    or workflow outcomes to advance), so the exchange must run in an explicit transaction to stay
    all-or-nothing."""
    if any(o.workflow_id is not None for o in outcomes):
        return True
    if request is None:
        return False
    if slots > 0 and len(direct_claim_limits(request, slots)) > 1:
        return True
    return async_slots > 0 and len(async_claim_limits(request, async_slots)) > 1


def claim_and_start_more(
    worker_id: str,
    hostname: str,
    limits: Sequence[tuple[str, int]],
    pids: Sequence[int],
    started: list[StartedTask],
    *,
    task_names: Sequence[str] | None = None,
    limited: Mapping[str, Sequence[str]] | None = None,
    wakes: list[float] | None = None,
) -> Op[int]:
    """Claim-and-start in the further queues of ``limits`` (one statement each, in order) for the
    pids that ``started`` has not served yet, extending it; returns how many rows were asked.
    ``limited`` and ``wakes``: see :func:`claim_and_start_query` and :func:`started_rows`."""
    asked = 0
    for queue_name, limit in limits:
        free = list(pids[len(started) :])
        n = min(limit, len(free))
        if n <= 0:
            break
        asked += n
        res = yield claim_and_start_query(
            worker_id, hostname, queue_name, free[:n], task_names=task_names, limited=limited
        )
        started.extend(started_rows(res.rows, wakes))
    return asked


def claim_and_start_query(
    worker_id: str,
    hostname: str,
    queue_name: str,
    pids: Sequence[int],
    *,
    task_names: Sequence[str] | None = None,
    limited: Mapping[str, Sequence[str]] | None = None,
) -> Query:
    """One queue's claim-and-start for ``pids``; with ``task_names``, of those tasks only; through
    the limited claim when ``limited`` names limits for the queue."""
    limit_names = None if limited is None else limited.get(queue_name)
    if limit_names:
        return limited_claim_query(
            worker_id, hostname, queue_name, pids, limit_names=limit_names, task_names=task_names
        )
    params: dict[str, object] = {
        "queue_name": queue_name,
        "pids": list(pids),
        "worker_id": worker_id,
        "hostname": hostname,
    }
    if task_names is None:
        return Query(task_sql.TASK_CLAIM_AND_START_AVAILABLE, params)
    params["task_names"] = list(task_names)
    return Query(task_sql.TASK_CLAIM_AND_START_AVAILABLE_OF_NAMES, params)


def started_rows(
    rows: Iterable[Sequence[Any]], wakes: list[float] | None = None
) -> list[StartedTask]:
    """The tasks a claim-and-start moved to RUNNING, most urgent first. A limited claim's row
    without an id only tells in how many ms a task held back by a rate limit may start: it goes
    to ``wakes`` (in seconds)."""
    started: list[StartedTask] = []
    for r in rows:
        if r[0] is not None:
            started.append(StartedTask(ClaimedTask(*r[:12]), int(r[12])))
        elif wakes is not None:
            wakes.append(int(r[13]) / 1000)
    started.sort(key=lambda s: (s.task.priority, s.task.sent_at, s.task.id))
    return started


@dataclass(slots=True)
class ExchangeStatements:
    """The statements of one worker exchange, sent in one round trip: its head (see
    :func:`exchange_head`), what the mode adds, then the first reads of the workflow advance."""

    outcomes: Sequence[TaskOutcome]
    statements: list[Query]
    workflow_ids: list[str]
    finish_at: int

    def send(self, engine: WorkflowEngine | None) -> Op[tuple[tuple[QueryResult, ...], Finished]]:
        """Send the statements; return every statement's result and what the finish did."""
        advance = workflow_advance(engine, self.outcomes, self.workflow_ids)
        advance_at = len(self.statements)
        if advance is not None:
            self.statements.extend(advance.queries())
        parts = yield from together(self.statements)
        finished = (
            finished_ids(self.outcomes, parts[self.finish_at]) if self.outcomes else set[str]()
        )
        undecided: list[NodeRef] = []
        if advance is not None:
            undecided = yield from advance.run(parts[advance_at:])
        return parts, Finished(finished, undecided)


def exchange_head(
    outcomes: Sequence[TaskOutcome],
    worker_id: str,
    engine: WorkflowEngine | None,
    *,
    durable: bool,
) -> ExchangeStatements:
    """The first statements of a worker exchange: its settings (generic plans: see
    TASK_PLANS_GENERIC_IN_TRANSACTION; they end with the exchange's implicit or explicit
    transaction), the locks of the outcomes' workflow trees, the finish. Its workflows are none
    without an ``engine``: the reaper advances those."""
    first: list[Query] = [_exchange_settings(durable=durable)]
    workflow_ids = workflow_ids_of(outcomes) if engine is not None else []
    if engine is not None and workflow_ids:
        first.append(engine.lock_query(workflow_ids))
    finish_at = len(first)
    if outcomes:
        first.append(finish_query(outcomes, worker_id))
    return ExchangeStatements(outcomes, first, workflow_ids, finish_at)


def exchange_op(
    worker_id: str,
    hostname: str,
    *,
    outcomes: Sequence[TaskOutcome],
    request: ClaimRequest | None,
    pids: Sequence[int],
    notify_capacity: bool,
    keep_running: Sequence[AttemptKey] | None,
    engine: WorkflowEngine | None = None,
    async_pids: Sequence[int] = (),
    async_names: Sequence[str] = (),
) -> Op[TaskExchange]:
    """A worker's hot path in one round trip: write ``outcomes``, then claim and start up to one
    task per child pid in ``pids`` (hard-cap mode without cluster-wide caps, see
    :func:`can_start_directly`), and one task of ``async_names`` per entry of ``async_pids`` (the
    free slots of children running async tasks; a pid appears once per slot).

    The statements go out as one pipeline, so without an explicit transaction they commit together
    or not at all: a failure leaves every outcome unwritten and nothing claimed, and the caller
    simply tries again. With several queues the later claims depend on how many rows the earlier
    ones got (one statement each), so the caller runs the op in a transaction then
    (:func:`exchange_needs_transaction`).

    ``keep_running`` (after a failed exchange whose claims may have committed without the reply
    arriving) also sends this worker's RUNNING rows that are not among these claims back to
    PENDING: no child ever got them.

    Workflow outcomes (run in a transaction, see :func:`exchange_needs_transaction`) lock their
    trees first and advance them after the finish; the claim then comes last, so a node enqueued
    by the advance (the next link of a chain) can be started by this very exchange.
    """
    if request is not None and not can_start_directly(request):
        raise ValueError("exchange_op claims only in hard-cap mode without cluster-wide caps")
    durable = bool(outcomes) or keep_running is not None
    batch = exchange_head(outcomes, worker_id, engine, durable=durable)
    first = batch.statements
    if outcomes and notify_capacity:
        first.append(CAPACITY_FREED)
    reconcile_at = -1
    if keep_running is not None:
        reconcile_at = len(first)
        first.append(requeue_untracked_query(worker_id, keep_running, outcomes))
        first.append(wake_workers_query("requeued"))
    limits = direct_claim_limits(request, len(pids)) if request is not None else []
    limited = request.limits if request is not None else None
    async_limits: list[tuple[str, int]] = []
    if request is not None and async_pids and async_names:
        async_limits = async_claim_limits(request, len(async_pids))
    claim_at = async_claim_at = -1
    asked = 0
    if not batch.workflow_ids:
        # The first queue's claims ride in the first pipeline; an async claim there never takes a
        # row the claim before it started (that row is RUNNING by then).
        if limits:
            claim_at = len(first)
            queue_name, asked = limits[0]
            first.append(
                claim_and_start_query(
                    worker_id, hostname, queue_name, pids[:asked], limited=limited
                )
            )
            limits = limits[1:]
        if async_limits:
            async_claim_at = len(first)
            queue_name, n = async_limits[0]
            asked += n
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
            async_limits = async_limits[1:]
    if len(first) == 1 and not limits and not async_limits:
        return TaskExchange()
    parts, done = yield from batch.send(engine)
    requeued: list[str] = []
    if reconcile_at >= 0:
        requeued = [r[0] for r in parts[reconcile_at].rows]
        if requeued:
            _log.warning(
                "task_requeued_untracked: %d task(s) started by a claim whose reply was lost went "
                "back to PENDING: %s",
                len(requeued),
                ", ".join(requeued[:20]),
            )
    wakes: list[float] = []
    started = started_rows(parts[claim_at].rows, wakes) if claim_at >= 0 else []
    asked += yield from claim_and_start_more(
        worker_id, hostname, limits, pids, started, limited=limited, wakes=wakes
    )
    if async_pids and async_names:
        started_async = (
            started_rows(parts[async_claim_at].rows, wakes) if async_claim_at >= 0 else []
        )
        asked += yield from claim_and_start_more(
            worker_id,
            hostname,
            async_limits,
            async_pids,
            started_async,
            task_names=async_names,
            limited=limited,
            wakes=wakes,
        )
        started.extend(started_async)
    return TaskExchange(
        finished=done.ids,
        started=started,
        requeued=requeued,
        full=0 < asked == len(started),
        undecided=done.undecided,
        wake_in_s=min(wakes, default=None),
    )


def requeue_untracked_running_op(
    worker_id: str, keep_running: Sequence[AttemptKey]
) -> Op[list[str]]:
    """This worker's RUNNING rows not among the claims ``keep_running`` -> PENDING (see
    :func:`exchange_op`); returns their ids."""
    exchange = yield from exchange_op(
        worker_id,
        "",
        outcomes=(),
        request=None,
        pids=(),
        notify_capacity=False,
        keep_running=keep_running,
    )
    return exchange.requeued
