"""Giving tasks back: unstarted claims (CLAIMED -> PENDING) and started tasks no child ever began
(RUNNING -> PENDING). Neither counts as an attempt."""

from __future__ import annotations

from collections.abc import Sequence

from horsies.broker.channels import wake_workers_query
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query


def requeue_running_op(worker_id: str, task_ids: Sequence[str]) -> Op[list[str]]:
    """The named RUNNING rows of this worker -> PENDING (no child ever began them; not an attempt);
    returns their ids and wakes the workers when there are any."""
    if not task_ids:
        return []
    res = yield Query(
        task_sql.TASK_REQUEUE_RUNNING_MANY, {"ids": list(task_ids), "worker_id": worker_id}
    )
    if res.rows:
        yield wake_workers_query("requeued")
    return [r[0] for r in res.rows]


def release_op(worker_id: str, task_ids: Sequence[str]) -> Op[int]:
    """CLAIMED (owned) -> PENDING; returns the number released."""
    if not task_ids:
        return 0
    res = yield Query(
        task_sql.TASK_RELEASE_CLAIMED_MANY, {"ids": list(task_ids), "worker_id": worker_id}
    )
    if res.rows:
        # Released tasks are claimable again: wake the workers.
        yield wake_workers_query("released")
    return len(res.rows)
