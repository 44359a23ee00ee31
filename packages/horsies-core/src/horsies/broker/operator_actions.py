"""Operator actions on one task: cancel one no worker has started, run an ended one again."""

from __future__ import annotations

from horsies.broker.channels import TASK_DONE, TASK_NEW, notify_query, queue_channel
from horsies.broker.hooks import NodeRef, WorkflowEngine, run_then_decide
from horsies.broker.programs import Program
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query, together

__all__ = ["cancel_task_program", "retry_task_op"]


def _cancel_task_op(engine: WorkflowEngine | None, task_id: str) -> Op[tuple[bool, list[NodeRef]]]:
    """Cancel a task no worker has started (run in a transaction); False when it had started,
    ended or does not exist. Waiters are woken (``task_done``); a workflow task's node ends FAILED
    with ``TASK_CANCELLED`` and its workflow advances, its tree locked first as a worker would."""
    found = yield Query(task_sql.TASK_GET_WORKFLOW_ID, {"id": task_id})
    workflow_id: str | None = found.rows[0][0] if found.rows else None
    if engine is not None and workflow_id is not None:
        yield engine.lock_query([workflow_id])
    res = yield Query(task_sql.TASK_CANCEL_IF_NOT_STARTED, {"id": task_id})
    if not res.rows:
        return False, []
    yield notify_query(TASK_DONE, task_id)
    if engine is None or workflow_id is None:
        return True, []
    advance = engine.advance([task_id], [workflow_id])
    parts = yield from together(advance.queries())
    undecided = yield from advance.run(parts)
    return True, undecided


def cancel_task_program(engine: WorkflowEngine | None, task_id: str) -> Program[bool]:
    """Cancel a task no worker has started (see ``_cancel_task_op``), then decide the workflow
    nodes that became READY because of it."""
    return (yield from run_then_decide(engine, _cancel_task_op(engine, task_id), "task_cancel"))


def retry_task_op(task_id: str) -> Op[bool]:
    """Send an ended (FAILED or CANCELLED) plain task back to PENDING for a fresh run and wake the
    workers of its queue; False for a workflow task, a task that has not ended, or an unknown id."""
    res = yield Query(task_sql.TASK_RETRY_IF_ENDED, {"id": task_id})
    if not res.rows:
        return False
    queue_name = str(res.rows[0][0])
    yield from together(
        (notify_query(TASK_NEW, task_id), notify_query(queue_channel(queue_name), task_id))
    )
    return True
