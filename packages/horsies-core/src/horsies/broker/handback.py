"""Giving tasks back: unstarted claims (CLAIMED -> PENDING) and started tasks no child ever began
(RUNNING -> PENDING). Neither counts as an attempt. Every statement names the claims it gives back
by (task id, attempt), so a worker never gives back a claim that is no longer its own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from horsies.broker.channels import wake_workers_query
from horsies.broker.claims import AttemptKey
from horsies.broker.finish import TaskOutcome
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query


def _columns(keys: Iterable[AttemptKey]) -> tuple[list[str], list[int]]:
    """The task ids and the attempts of ``keys``, as the parallel arrays the statements take."""
    pairs = list(keys)
    return [task_id for task_id, _ in pairs], [attempt for _, attempt in pairs]


def _named(worker_id: str, keys: Iterable[AttemptKey]) -> dict[str, object]:
    ids, attempts = _columns(keys)
    return {"worker_id": worker_id, "ids": ids, "attempts": attempts}


def release_query(worker_id: str, claims: Sequence[AttemptKey]) -> Query:
    """TASK_RELEASE_CLAIMED_MANY for these claims of ``worker_id``."""
    return Query(task_sql.TASK_RELEASE_CLAIMED_MANY, _named(worker_id, claims))


def requeue_untracked_query(
    worker_id: str, keep: Sequence[AttemptKey], outcomes: Sequence[TaskOutcome] = ()
) -> Query:
    """TASK_REQUEUE_UNTRACKED_RUNNING: ``worker_id``'s RUNNING rows except the claims it still
    holds (``keep``) and those of the ``outcomes`` it is writing."""
    written = ((o.task_id, o.attempt) for o in outcomes if o.attempt is not None)
    ids, attempts = _columns([*keep, *written])
    return Query(
        task_sql.TASK_REQUEUE_UNTRACKED_RUNNING,
        {"worker_id": worker_id, "keep_ids": ids, "keep_attempts": attempts},
    )


def requeue_running_op(worker_id: str, claims: Sequence[AttemptKey]) -> Op[list[str]]:
    """The named RUNNING claims of this worker -> PENDING (no child ever began them; not an
    attempt); returns their ids and wakes the workers when there are any."""
    if not claims:
        return []
    res = yield Query(task_sql.TASK_REQUEUE_RUNNING_MANY, _named(worker_id, claims))
    if res.rows:
        yield wake_workers_query("requeued")
    return [r[0] for r in res.rows]


def release_op(worker_id: str, claims: Sequence[AttemptKey]) -> Op[int]:
    """CLAIMED (owned) -> PENDING; returns the number released."""
    if not claims:
        return 0
    res = yield release_query(worker_id, claims)
    if res.rows:
        # Released tasks are claimable again: wake the workers.
        yield wake_workers_query("released")
    return len(res.rows)
