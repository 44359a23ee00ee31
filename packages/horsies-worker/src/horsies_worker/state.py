"""What the worker's claim modes share with the worker: the tasks it holds, and handing them to
children.

One :class:`WorkerState` per worker, created by :class:`~horsies_worker.worker.Worker` once its
children and its completer exist. Ownership: everything here is read and written on the worker's
event-loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from horsies.broker.claims import AttemptKey, ClaimedTask
from horsies.logs import get_logger, task_fields
from horsies.retry import time_limit_for_stored

from horsies_worker.children import QUEUE_WAIT_MAX_S, Assignment, ChildPool, ChildProcess

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker
    from horsies.broker.exchange import StartedTask
    from horsies.broker.finish import TaskOutcome
    from horsies.broker.hooks import NodeRef

    from horsies_worker.claimer import Claimer
    from horsies_worker.completer import Completer
    from horsies_worker.config import WorkerConfig
    from horsies_worker.identity import WorkerIdentity
    from horsies_worker.metrics import WorkerMetrics

__all__ = ["WorkerState"]

logger = get_logger("worker")

_CHILD_QUEUE_MAX_RUNTIME_S: Final = 0.002
"""Prefetch mode queues tasks behind a child's running one only while tasks usually take less
than this (a queued task waits behind the running one)."""
_CHILD_QUEUE_MAX: Final = 32
"""At most this many tasks on one child at once."""
_RUNTIME_EWMA_WEIGHT: Final = 0.2
"""Weight of the newest execution time in the running average of execution times."""
DECIDE_JOB: Final = "horsies-decide"
"""The name of the background jobs that decide workflow nodes (the app's code: shutdown cancels
them instead of waiting)."""


@dataclass(eq=False, kw_only=True)
class WorkerState:
    """The tasks a worker holds (on its children, waiting locally, with an unwritten outcome), the
    events of its claim loop, and the hand-over of started tasks to children."""

    identity: WorkerIdentity
    config: WorkerConfig
    broker: PostgresBroker
    claimer: Claimer
    pool: ChildPool
    completer: Completer
    wake: asyncio.Event
    """Set to run a claim pass now (a notification, a result, a free child)."""
    stop: asyncio.Event
    """Set when the worker stops claiming."""
    async_names: frozenset[str] = frozenset()
    """The app's ``async def`` tasks: a child runs several of them at once."""
    metrics: WorkerMetrics | None = None
    """The worker's metrics recorder; None when metrics are off (tested once per event)."""
    pending: deque[ClaimedTask] = field(init=False, default_factory=deque[ClaimedTask])
    """Claimed, not yet handed to a child (prefetch, or waiting for a free child)."""
    orphaned_claims: list[AttemptKey] = field(init=False, default_factory=list[AttemptKey])
    """Tasks of a failed prefetch exchange whose starts may have committed: no longer held
    here; the next exchange releases the claims among them and requeues the started ones."""
    reconcile_needed: bool = field(init=False, default=False)
    """Set when a claim-and-start round trip failed: it may have committed without its reply,
    so the next one also sends this worker's untracked RUNNING rows back to PENDING."""
    runtime_ewma: float | None = field(init=False, default=None)
    """Running average of task execution times (send to result)."""
    jobs: set[asyncio.Task[None]] = field(init=False, default_factory=set[asyncio.Task[None]])
    """Background jobs (requeues, workflow decisions); shutdown waits for them."""
    queue_check: asyncio.TimerHandle | None = field(init=False, default=None)
    """The pending look for tasks queued behind a task that runs too long."""
    limit_wake: asyncio.TimerHandle | None = field(init=False, default=None)
    """The next claim pass for a task a rate limit holds back (see `wake_later`)."""

    # -- counts -----------------------------------------------------------------------------------

    def assignments(self) -> list[tuple[ChildProcess, Assignment]]:
        """Every task on a child, with its child."""
        return self.pool.assignments()

    def running_count(self) -> int:
        """Tasks handed to children and not finished yet."""
        return sum(1 for _, a in self.assignments() if a.sent)

    def claimed_count(self) -> int:
        """Tasks this worker holds in CLAIMED: waiting locally or being started."""
        return len(self.pending) + sum(1 for _, a in self.assignments() if not a.sent)

    def budget(self) -> int:
        """How many more tasks of any kind this worker may take now.

        The async tasks a child runs side by side take one of the worker's slots together (the
        others are :meth:`async_budget`'s), and the waiting async tasks that free async slots will
        take do not count.
        """
        running = 0
        for child in self.pool.children:
            sent = [a.concurrent for a in child.assignments if a.sent]
            running += sent.count(False) + int(True in sent)
        absorbed = min(self._pending_async(), self._async_free())
        return self.claimer.budget(running=running, claimed=self.claimed_count() - absorbed)

    def async_budget(self) -> int:
        """How many more async tasks the free slots of children running async tasks may take, once
        the async tasks waiting here have taken theirs."""
        return max(0, self._async_free() - self._pending_async())

    def _async_free(self) -> int:
        if not self.async_names:
            return 0
        concurrency = self.config.async_concurrency
        return sum(child.async_free_slots(concurrency) for child in self.pool.children)

    def _pending_async(self) -> int:
        names = self.async_names
        return sum(1 for task in self.pending if task.task_name in names) if names else 0

    def tracked_claims(self) -> list[AttemptKey]:
        """Every claim this worker still holds: on a child, waiting locally, or with an unwritten
        outcome."""
        keys = [a.task.key for _, a in self.assignments()]
        keys += [t.key for t in self.pending]
        keys += self.completer.pending_keys()
        return keys

    def claims_to_reconcile(self) -> list[AttemptKey] | None:
        """Every claim this worker still holds when the next round trip must also give back what
        a failed one may have committed (orphaned claims, untracked RUNNING rows); else None."""
        if self.orphaned_claims or self.reconcile_needed:
            return self.tracked_claims()
        return None

    def add_claims(self, claimed: Sequence[ClaimedTask]) -> None:
        """Queue new claims locally. A claim of a task already waiting here replaces it: the old
        one's lease expired while it waited and this worker claimed the task again, so only the
        new attempt can start (a task is in a worker's hands at most once)."""
        if not claimed:
            return
        renewed = {task.id for task in claimed}
        if any(task.id in renewed for task in self.pending):
            kept = [task for task in self.pending if task.id not in renewed]
            self.pending.clear()
            self.pending.extend(kept)
        self.pending.extend(claimed)

    def reconciled(self) -> None:
        """A round trip that carried :meth:`claims_to_reconcile` committed: nothing is left over."""
        self.orphaned_claims = []
        self.reconcile_needed = False

    def record_runtime(self, runtime_s: float) -> None:
        """One more execution time for the running average."""
        ewma = self.runtime_ewma
        self.runtime_ewma = (
            runtime_s if ewma is None else ewma + _RUNTIME_EWMA_WEIGHT * (runtime_s - ewma)
        )

    def submit_outcome(self, assignment: Assignment, outcome: TaskOutcome) -> None:
        """Queue the outcome of a task a child ran (or died running) for writing, and count it."""
        self.completer.submit(outcome)
        metrics = self.metrics
        if metrics is not None:
            run_s = time.monotonic() - assignment.started_monotonic
            # A stop carried out ends as CANCELLED unless the result is ok (the finish's rule).
            metrics.task_finished(assignment.task, outcome, run_s, cancelled=assignment.stopped)

    # -- children ---------------------------------------------------------------------------------

    def child_depth(self) -> int:
        """How many tasks one child may hold at once: 1, or in prefetch mode while tasks are short
        up to its share of the prefetch buffer plus the running one.

        A queued task is RUNNING from the hand-over (its lease was checked then); the child starts
        it the moment the previous one returns instead of waiting for a database round trip of the
        main process, which is what bounds a prefetching worker on short tasks otherwise.
        """
        cfg = self.config
        typical = self.runtime_ewma
        if not cfg.soft_cap or typical is None or typical > _CHILD_QUEUE_MAX_RUNTIME_S:
            return 1
        share = -(-cfg.prefetch_buffer // cfg.processes)
        return min(_CHILD_QUEUE_MAX, 1 + share)

    def dispatch_due(self) -> bool:
        """True when a task waits locally and a child has room for it."""
        if not self.pending:
            return False
        depth = self.child_depth()
        if any(child.free_slots(depth) for child in self.pool.children):
            return True
        return self._pending_async() > 0 and self._async_free() > 0

    def reserve_children(self) -> list[tuple[ChildProcess, Assignment]]:
        """Reserve child slots for waiting tasks: idle children first, then one queued task per
        child per round, so that the waiting tasks spread over the children; then the free slots
        of children running async tasks for the async tasks still waiting."""
        depth = self.child_depth()
        pairs: list[tuple[ChildProcess, Assignment]] = []
        pending = self.pending
        for level in range(depth):
            for child in self.pool.children:
                if not pending:
                    return pairs
                if child.free_slots(depth) == 0 or len(child.assignments) != level:
                    continue
                assignment = self.assignment(pending.popleft())
                child.reserve(assignment)  # synchronously: no other pass can take the slot
                pairs.append((child, assignment))
        slots = self.async_slots()
        if not slots or not self._pending_async():
            return pairs
        waiting: list[ClaimedTask] = []
        for task in pending:
            if slots and task.task_name in self.async_names:
                child = slots.pop(0)
                assignment = self.assignment(task)
                child.reserve(assignment)
                pairs.append((child, assignment))
            else:
                waiting.append(task)
        pending.clear()
        pending.extend(waiting)
        return pairs

    def assignment(self, task: ClaimedTask) -> Assignment:
        """A task's assignment to a child: whether it may run beside others (an async task), and
        its time limit."""
        return Assignment(
            task=task,
            concurrent=task.task_name in self.async_names,
            time_limit_s=time_limit_for_stored(task.task_options),
        )

    def async_slots(self) -> list[ChildProcess]:
        """The children running async tasks, each listed once per async task it may still take,
        level by level so that new tasks spread over the children."""
        if not self.async_names:
            return []
        concurrency = self.config.async_concurrency
        free = [(c, n) for c in self.pool.children if (n := c.async_free_slots(concurrency)) > 0]
        if not free:
            return []
        return [c for level in range(max(n for _, n in free)) for c, n in free if n > level]

    def hand_over(self, children: Sequence[ChildProcess], started: Sequence[StartedTask]) -> None:
        """Give each task just started for a child pid to that child (its slot was free when the
        pid was chosen)."""
        by_pid = {child.pid: child for child in children}
        batches: dict[ChildProcess, list[Assignment]] = {}
        orphans: list[ClaimedTask] = []
        for item in started:
            child = by_pid.get(item.pid)
            if child is not None and child.alive:
                assignment = self.assignment(item.task)
                child.reserve(assignment)
                batches.setdefault(child, []).append(assignment)
            else:
                orphans.append(item.task)
        for child, batch in batches.items():
            orphans += [a.task for a in self._send(child, batch)]
        self.requeue_unstarted(orphans, "its child process died during the round trip")

    def hand_over_claims(
        self, pairs: Sequence[tuple[ChildProcess, Assignment]], started: set[AttemptKey]
    ) -> None:
        """Send each reserved claim that was started (matched by attempt: two copies of one task
        never both start) to its child; drop the lost ones."""
        batches: dict[ChildProcess, list[Assignment]] = {}
        for child, assignment in pairs:
            task = assignment.task
            if task.key not in started:
                # Lease expired and another worker took it, or it was requeued: not ours any more.
                logger.info(
                    "task_claim_lost: %s (%s)",
                    task.id,
                    task.task_name,
                    extra=task_fields(task.id, task.task_name),
                )
                child.unreserve(assignment)
            else:
                batches.setdefault(child, []).append(assignment)
        # A child that died between reservation and hand-over: the rows are RUNNING with its pid,
        # but no user code ran them.
        orphans = [a.task for child, batch in batches.items() for a in self._send(child, batch)]
        self.requeue_unstarted(orphans, "its child process died before the hand-over")

    def _send(self, child: ChildProcess, batch: Sequence[Assignment]) -> list[Assignment]:
        """Send tasks reserved on ``child`` to it; returns those it did not get (the child died
        since they were reserved, or dies now), their reservations dropped."""
        present = {id(a) for a in child.assignments}
        held = [a for a in batch if id(a) in present]
        if not held or not child.send_tasks(held):
            for assignment in held:
                child.unreserve(assignment)
            return list(batch)
        if logger.isEnabledFor(logging.DEBUG):
            for assignment in held:
                task = assignment.task
                logger.debug(
                    "task_started: %s (%s) pid=%s",
                    task.id,
                    task.task_name,
                    child.pid,
                    extra=task_fields(task.id, task.task_name),
                )
        if not all(a.written for a in held):
            self._watch_queue()
        return [a for a in batch if id(a) not in present]

    def wake_later(self, delay_s: float | None) -> None:
        """Run a claim pass in ``delay_s`` seconds, when a rate limit lets a waiting task start
        (an earlier such pass already planned stands; None plans nothing)."""
        if delay_s is None:
            return
        loop = asyncio.get_running_loop()
        planned = self.limit_wake
        now = loop.time()
        due = now + delay_s
        if planned is not None and not planned.cancelled() and now < planned.when() <= due:
            return  # still to come, and soon enough
        if planned is not None:
            planned.cancel()
        self.limit_wake = loop.call_at(due, self.wake.set)

    def _watch_queue(self) -> None:
        """Look again, once the running tasks may have outrun QUEUE_WAIT_MAX_S, for tasks queued
        behind them."""
        if self.queue_check is None:
            loop = asyncio.get_running_loop()
            self.queue_check = loop.call_later(QUEUE_WAIT_MAX_S, self._take_back_overdue)

    def _take_back_overdue(self) -> None:
        """Take back the tasks queued behind a task running longer than QUEUE_WAIT_MAX_S and send
        them back to PENDING (their code never began), so that they run elsewhere now and a death
        of this worker cannot fail them."""
        self.queue_check = None
        now = time.monotonic()
        overdue: list[ClaimedTask] = []
        waiting = False
        for child in self.pool.children:
            if child.head_overdue(now):
                overdue += [a.task for a in child.take_back_queued()]
            elif child.queued():
                waiting = True
        if overdue:
            # Routine with a mix of short and long tasks: not worth a warning.
            logger.info(
                "tasks_taken_back: %s task(s) queued behind one running over %gs: %s",
                len(overdue),
                QUEUE_WAIT_MAX_S,
                ", ".join(task.id for task in overdue),
            )
            self._requeue(overdue)
        if waiting:
            self._watch_queue()

    # -- background jobs --------------------------------------------------------------------------

    def in_background(self, job: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``job`` beside the claim loop; shutdown waits for it (bounded)."""
        task = asyncio.get_running_loop().create_task(job, name=name)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)

    def requeue_unstarted(self, tasks: Sequence[ClaimedTask], why: str) -> None:
        """Send the RUNNING rows of tasks no child ever began back to PENDING (not an attempt), by
        claim: other round trips may be starting tasks meanwhile. Runs in the background."""
        for task in tasks:
            logger.warning(
                "task_requeued: %s (%s): %s",
                task.id,
                task.task_name,
                why,
                extra=task_fields(task.id, task.task_name),
            )
        self._requeue(tasks)

    def _requeue(self, tasks: Sequence[ClaimedTask]) -> None:
        if not tasks:
            return
        keys = [task.key for task in tasks]

        async def requeue() -> None:
            try:
                await self.broker.requeue_running_async(self.identity.worker_id, keys)
            except Exception as exc:
                self._database_error("requeue", exc)
                logger.error(
                    "requeue_unstarted_failed: %s (the reaper will recover %s task(s))",
                    exc,
                    len(tasks),
                )
            self.wake.set()

        self.in_background(requeue(), "horsies-requeue")

    def decide(self, nodes: Sequence[NodeRef]) -> None:
        """Decide, in the background, workflow nodes that wait for the app's code (conditions,
        child workflows): in a thread and outside every transaction, so a slow condition delays
        only its own node."""
        if not nodes:
            return
        chosen = list(nodes)

        async def decide() -> None:
            try:
                await self.broker.decide_async(chosen)
            except Exception as exc:
                self._database_error("decide", exc)
                logger.error(
                    "workflow_decide_failed: %s (the reaper decides the %s node(s) later)",
                    exc,
                    len(chosen),
                )

        self.in_background(decide(), DECIDE_JOB)

    def _database_error(self, operation: str, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.database_error(operation, exc)
