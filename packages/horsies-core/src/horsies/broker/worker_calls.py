"""The calls the worker makes on `PostgresBroker`: exchanges (its hot path), claims and starts,
finishing, giving tasks back, heartbeats and snapshots, the reaper and the workflow decisions."""

from __future__ import annotations

from collections.abc import Sequence

from horsies.broker import (
    channels,
    claims,
    exchange,
    finish,
    handback,
    heartbeats,
    prefetch,
    recovery,
)
from horsies.broker import (
    limits as limits_module,
)
from horsies.broker import (
    retention as retention_module,
)
from horsies.broker.broker_core import BrokerCore
from horsies.broker.claim_plan import ClaimRequest
from horsies.broker.claims import AttemptKey, ClaimedTask, Start
from horsies.broker.exchange import TaskExchange
from horsies.broker.finish import Finished, TaskOutcome
from horsies.broker.heartbeats import WorkerStateRow
from horsies.broker.hooks import NodeRef
from horsies.broker.limits import LimitNumbers
from horsies.broker.prefetch import PrefetchExchange
from horsies.broker.recovery import ReapReport
from horsies.broker.retention import PruneReport
from horsies.broker.steps import QueryResult
from horsies.config import RecoveryConfig, RetentionConfig

__all__ = ["WorkerCalls"]


class WorkerCalls(BrokerCore):
    """The batched lifecycle calls of the worker; it never writes SQL itself."""

    # -- worker-facing -----------------------------------------------------------------------------

    async def claim_async(self, worker_id: str, request: ClaimRequest) -> list[ClaimedTask]:
        """One claim pass in one transaction; returns the rows now CLAIMED by ``worker_id``, most
        urgent queue first. Takes the cluster claim lock only when a cluster-wide cap applies. In
        hard-cap mode without such caps prefer :meth:`exchange_async`, which skips the CLAIMED
        phase."""
        if request.local_budget <= 0 or not request.queues:
            return []
        return await self._run_async(
            claims.claim_op(worker_id, request), "claim_tasks", transaction=True
        )

    async def start_async(
        self, worker_id: str, hostname: str, starts: Sequence[Start]
    ) -> set[AttemptKey]:
        """CLAIMED -> RUNNING for (task id, attempt, child pid) triples still owned by
        ``worker_id`` in that attempt with a valid lease, in one statement; returns the claims
        actually started (the others were lost). A started task is never reported lost, even when
        the connection is lost mid-statement."""
        if not starts:
            return set()
        return await self._async.drive(claims.start_program(worker_id, hostname, starts))

    async def finish_async(
        self,
        outcomes: Sequence[TaskOutcome],
        *,
        worker_id: str | None,
        notify_capacity: bool = True,
    ) -> Finished:
        """Persist a batch of outcomes in one statement: COMPLETED/FAILED, or back to PENDING for
        a retry; only rows still RUNNING (for ``worker_id`` when given) change. Returns the ids
        updated and the workflow nodes left for :meth:`decide_async`.

        ``notify_capacity`` also sends the ``task_new`` 'capacity' wake-up in the same round trip;
        only workers held back by a cluster-wide cap need it, so a worker without such caps passes
        False.
        """
        if not outcomes:
            return Finished()
        return await self._run_async(
            finish.finish_op(
                outcomes, worker_id, notify_capacity=notify_capacity, engine=self._engine()
            ),
            "finish_tasks",
            transaction=any(o.workflow_id is not None for o in outcomes),
        )

    async def exchange_async(
        self,
        worker_id: str,
        hostname: str,
        *,
        outcomes: Sequence[TaskOutcome] = (),
        request: ClaimRequest | None = None,
        pids: Sequence[int] = (),
        notify_capacity: bool = False,
        keep_running: Sequence[AttemptKey] | None = None,
        async_pids: Sequence[int] = (),
        async_names: Sequence[str] = (),
    ) -> TaskExchange:
        """The worker's hot path, in one round trip: write ``outcomes`` (as :meth:`finish_async`)
        and claim up to one task per idle child in ``pids``, moving it PENDING -> RUNNING for that
        child at once (no CLAIMED phase), per ``request``'s queues and per-queue batch; and up to
        one task named in ``async_names`` per entry of ``async_pids`` (a child running async
        tasks, listed once per free slot).

        Only for hard-cap mode without cluster-wide caps (``exchange.can_start_directly``);
        otherwise use :meth:`claim_async` + :meth:`start_async`. All statements commit together
        or not at all, so after an error nothing was written and the call can simply be repeated,
        except when the connection broke after the commit: then pass every claim (task id,
        attempt) this worker still runs or has an unwritten outcome for as ``keep_running`` on the
        next call, and this worker's other RUNNING rows (started, but never handed to a child) go
        back to PENDING. Calls on one broker run one at a time: they share one connection.
        """
        claiming = request is not None and request.local_budget > 0
        slots = len(pids) if claiming else 0
        async_slots = len(async_pids) if claiming and async_names else 0
        if not outcomes and not slots and not async_slots and keep_running is None:
            return TaskExchange()
        return await self._run_async(
            exchange.exchange_op(
                worker_id,
                hostname,
                outcomes=outcomes,
                request=request if slots or async_slots else None,
                pids=list(pids)[:slots],
                notify_capacity=notify_capacity,
                keep_running=keep_running,
                engine=self._engine(),
                async_pids=list(async_pids)[:async_slots],
                async_names=list(async_names),
            ),
            "exchange",
            hot=True,
            transaction=exchange.exchange_needs_transaction(request, slots, outcomes, async_slots),
        )

    async def prefetch_exchange_async(
        self,
        worker_id: str,
        hostname: str,
        *,
        outcomes: Sequence[TaskOutcome] = (),
        starts: Sequence[Start] = (),
        direct_pids: Sequence[int] = (),
        request: ClaimRequest | None = None,
        release: Sequence[AttemptKey] = (),
        keep_running: Sequence[AttemptKey] | None = None,
        async_pids: Sequence[int] = (),
        async_names: Sequence[str] = (),
    ) -> PrefetchExchange:
        """Prefetch mode's hot path (soft cap, no cluster-wide caps), all or nothing and usually
        one round trip: write ``outcomes``, start the claims handed to children (``starts``: (task
        id, attempt, child pid)), start tasks straight from PENDING for the other free child slots
        (``direct_pids``: one pid per slot), likewise the free slots of children running async
        tasks with tasks of ``async_names`` (``async_pids``), and claim the rest of
        ``request.local_budget`` with a lease.

        After an error nothing was written, unless the connection broke after the commit: so the
        caller drops the tasks of a failed call's ``starts`` and passes them as ``release``, with
        every claim it still holds as ``keep_running``, on the next call
        (see ``prefetch.prefetch_exchange_op``). Calls on one broker run one at a time: they share
        one connection.
        """
        return await self._run_async(
            prefetch.prefetch_exchange_op(
                worker_id,
                hostname,
                outcomes=outcomes,
                starts=starts,
                direct_pids=direct_pids,
                request=request,
                release=release,
                keep_running=keep_running,
                engine=self._engine(),
                async_pids=async_pids,
                async_names=async_names,
            ),
            "prefetch_exchange",
            hot=True,
            transaction=prefetch.prefetch_exchange_needs_transaction(
                request, len(direct_pids), outcomes, len(async_pids) if async_names else 0
            ),
        )

    async def requeue_running_async(
        self, worker_id: str, claims: Sequence[AttemptKey]
    ) -> list[str]:
        """Send the named RUNNING claims of ``worker_id`` back to PENDING: tasks it started but no
        child process ever began. Returns the ids requeued."""
        return await self._run_async(
            handback.requeue_running_op(worker_id, claims), "requeue_running", transaction=True
        )

    async def requeue_untracked_async(
        self, worker_id: str, keep_running: Sequence[AttemptKey]
    ) -> list[str]:
        """Send ``worker_id``'s RUNNING rows that are not among the claims ``keep_running`` back to
        PENDING and return their ids (see :meth:`exchange_async`). Only the owning worker may call
        it, with every claim it still runs or has an unwritten outcome for."""
        return await self._run_async(
            exchange.requeue_untracked_running_op(worker_id, keep_running),
            "requeue_untracked_running",
        )

    async def release_claimed_async(self, worker_id: str, claims: Sequence[AttemptKey]) -> int:
        """Give unstarted claims back (CLAIMED by ``worker_id`` in that attempt -> PENDING);
        returns how many."""
        if not claims:
            return 0
        return await self._run_async(
            handback.release_op(worker_id, claims), "release_claimed", transaction=True
        )

    async def write_heartbeats_async(
        self,
        worker_id: str,
        hostname: str,
        pid: int,
        claimed: Sequence[AttemptKey],
        running: Sequence[Start],
    ) -> list[str]:
        """One INSERT of 'claimer' rows (CLAIMED claims) and 'runner' rows ((task id, attempt,
        child pid) triples); returns the ids among ``running`` whose stop was requested."""
        query = heartbeats.heartbeat_query(worker_id, hostname, pid, claimed, running)
        if query is None:
            return []
        res: QueryResult = await self._run_async(query, "write_heartbeats")
        return [str(row[0]) for row in res.rows]

    async def register_limits_async(self, limits: Sequence[LimitNumbers]) -> list[LimitNumbers]:
        """Write the numbers of the rate and concurrency limits this worker enforces; returns the
        ones whose stored numbers differed (as they were)."""
        return await self._run_async(limits_module.register_limits_op(limits), "register_limits")

    async def prune_async(
        self, retention: RetentionConfig, *, dry_run: bool = False, budget_s: float | None = None
    ) -> PruneReport:
        """Remove finished tasks and workflows, heartbeats and snapshots past their period (see
        ``broker/retention.py``); ``dry_run`` only counts them. Stops after ``budget_s`` seconds
        (None: when nothing is left), or at once while another process prunes."""
        return await self._async.drive(
            retention_module.prune_program(retention, dry_run=dry_run, budget_s=budget_s)
        )

    def prune(
        self, retention: RetentionConfig, *, dry_run: bool = False, budget_s: float | None = None
    ) -> PruneReport:
        """Blocking twin of :meth:`prune_async` (``horsies db prune``)."""
        return self._sync.drive(
            retention_module.prune_program(retention, dry_run=dry_run, budget_s=budget_s)
        )

    async def insert_worker_state_async(self, state: WorkerStateRow) -> None:
        """Insert one worker snapshot into ``horsies_worker_states``."""
        await self._run_async(heartbeats.worker_state_query(state), "insert_worker_state")

    async def reap_async(self, recovery_config: RecoveryConfig) -> ReapReport:
        """One recovery pass, by at most one process of the cluster at a time: stale CLAIMED ->
        PENDING; stale RUNNING -> FAILED with WORKER_CRASHED, or retried when the task lists
        WORKER_CRASHED in auto_retry_for and has retries left; stuck workflows reconciled."""
        return await self._async.drive(recovery.reap_program(recovery_config, self._engine()))

    def reap(self, recovery_config: RecoveryConfig) -> ReapReport:
        """Sync twin of :meth:`reap_async`."""
        return self._sync.drive(recovery.reap_program(recovery_config, self._engine()))

    async def decide_async(self, nodes: Sequence[NodeRef]) -> None:
        """Decide workflow nodes an exchange or a finish left READY (their conditions and child
        workflows are the app's code): outside every transaction, the code in a worker thread."""
        engine = self._engine()
        if engine is not None and nodes:
            await self._async.drive(engine.decide(nodes))

    async def notify_async(self, channel: str, payload: str = "") -> None:
        """Send a notification (e.g. a delayed ``retry:<id>`` wake-up on a queue's channel)."""
        await self._run_async(channels.notify_query(channel, payload), "notify")

    def notify(self, channel: str, payload: str = "") -> None:
        """Sync twin of :meth:`notify_async`."""
        self._run_sync(channels.notify_query(channel, payload), "notify")
