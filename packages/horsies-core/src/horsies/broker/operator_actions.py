"""Operator actions on one task: cancel it (or stop it while it runs), run an ended one again."""

from __future__ import annotations

from horsies.broker.channels import TASK_DONE, TASK_NEW, TASK_STOP, notify_query, queue_channel
from horsies.broker.hooks import NodeRef, WorkflowEngine, run_then_decide
from horsies.broker.programs import Program
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query, together

__all__ = ["cancel_task_program", "retry_task_op"]


def _cancel_task_op(engine: WorkflowEngine | None, task_id: str) -> Op[tuple[bool, list[NodeRef]]]:
    """Cancel a task no worker has started, or ask its worker to stop a running plain task (run
    in a transaction); False when it had ended, runs in a workflow, or does not exist. A cancel
    wakes the waiters (``task_done``); a workflow task's node ends FAILED with ``TASK_CANCELLED``
    and its workflow advances, its tree locked first as a worker would. A stop request wakes the
    worker (``task_stop``), whose end of the run then decides the status."""
    found = yield Query(task_sql.TASK_GET_WORKFLOW_ID, {"id": task_id})
    workflow_id: str | None = found.rows[0][0] if found.rows else None
    if engine is not None and workflow_id is not None:
        yield engine.lock_query([workflow_id])
    res = yield Query(task_sql.TASK_CANCEL_IF_NOT_STARTED, {"id": task_id})
    if not res.rows:
        stopping = yield Query(task_sql.TASK_REQUEST_STOP_IF_RUNNING, {"id": task_id})
        if not stopping.rows:
            return False, []
        yield notify_query(TASK_STOP, task_id)
        return True, []
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
