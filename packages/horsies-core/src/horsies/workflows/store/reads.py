"""Workflow reads: status, outcome (and the wait for it), stored node results, the node list."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from horsies import failures
from horsies.broker.programs import Program, WaitPlan, run, wait_for
from horsies.broker.sql import workflows as wf_sql
from horsies.broker.steps import Op, Query
from horsies.broker.waiters import ResultWaiters
from horsies.codec import loads_json, task_result_from_json
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.workflows.status import WorkflowStatus

__all__ = [
    "get_program",
    "node_result_op",
    "nodes_op",
    "outcome_from_row",
    "outcome_op",
    "results_op",
    "status_op",
]


def _not_found(workflow_id: str) -> ValueError:
    return ValueError(f"Workflow {workflow_id} not found")


def _stored_error(
    error_json: str | None, code: LibraryErrorCode, message: str
) -> TaskResult[Any, TaskError]:
    if error_json is not None:
        decoded = task_result_from_json({"ok": None, "err": loads_json(error_json)})
        if decoded.is_err() and decoded.err is not None:
            return TaskResult(err=decoded.err)
    return failures.failure(code, message)


def outcome_from_row(
    workflow_id: str, row: Sequence[Any] | None
) -> TaskResult[Any, TaskError] | None:
    """Interpret a WF_GET row for ``get()``: the final outcome, None while the workflow is still
    running, and WORKFLOW_PAUSED at once for a paused one (waiting would only end at the
    deadline: a paused workflow moves only when someone resumes it)."""
    if row is None:
        raise _not_found(workflow_id)
    status, result, error = row
    if status == WorkflowStatus.COMPLETED.value:
        return task_result_from_json(result) if result is not None else TaskResult(ok=None)
    if status == WorkflowStatus.FAILED.value:
        return _stored_error(error, LibraryErrorCode.WORKFLOW_FAILED, "Workflow failed")
    if status == WorkflowStatus.CANCELLED.value:
        return _stored_error(error, LibraryErrorCode.WORKFLOW_CANCELLED, "Workflow cancelled")
    if status == WorkflowStatus.PAUSED.value:
        return failures.failure(
            LibraryErrorCode.WORKFLOW_PAUSED,
            "Workflow is paused awaiting intervention",
            {"workflow_id": workflow_id},
        )
    return None


def outcome_op(workflow_id: str) -> Op[TaskResult[Any, TaskError] | None]:
    """Read a workflow's outcome (see :func:`outcome_from_row`)."""
    res = yield Query(wf_sql.WF_GET, {"id": workflow_id})
    return outcome_from_row(workflow_id, res.rows[0] if res.rows else None)


def get_program(
    waiters: ResultWaiters, workflow_id: str, timeout_ms: int | None
) -> Program[TaskResult[Any, TaskError]]:
    """Wait until a workflow is terminal or PAUSED and return its outcome (``WorkflowHandle.get``);
    raises ``ValueError`` for an unknown id."""
    plan = WaitPlan(timeout_ms, time.monotonic())

    def read_final() -> Program[TaskResult[Any, TaskError] | None]:
        outcome: TaskResult[Any, TaskError] | None = yield from run(
            outcome_op(workflow_id), "workflow_get", deadline=plan.deadline
        )
        return outcome

    final = yield from wait_for(waiters, workflow_id, read_final, plan)
    return final if final is not None else _wait_timeout(timeout_ms)


def _wait_timeout(timeout_ms: int | None) -> TaskResult[Any, TaskError]:
    """WAIT_TIMEOUT outcome of a workflow ``get()``."""
    return failures.failure(
        LibraryErrorCode.WAIT_TIMEOUT,
        f"Workflow did not complete within {timeout_ms}ms",
        {"timeout_ms": timeout_ms},
    )


def status_op(workflow_id: str) -> Op[WorkflowStatus]:
    """The workflow's status; ValueError for an unknown id."""
    res = yield Query(wf_sql.WF_GET, {"id": workflow_id})
    if not res.rows:
        raise _not_found(workflow_id)
    return WorkflowStatus(res.rows[0][0])


def results_op(workflow_id: str) -> Op[dict[str, TaskResult[Any, TaskError]]]:
    """Every stored node result, keyed by node id."""
    res = yield Query(wf_sql.WF_GET_RESULTS, {"id": workflow_id})
    return {node_id: task_result_from_json(result) for node_id, result in res.rows}


def node_result_op(workflow_id: str, node_id: str) -> Op[TaskResult[Any, TaskError]]:
    """One node's stored result, or err RESULT_NOT_READY (non-blocking)."""
    res = yield Query(wf_sql.WF_GET_NODE_RESULT, {"id": workflow_id, "node_id": node_id})
    if res.rows and res.rows[0][0] is not None:
        return task_result_from_json(res.rows[0][0])
    return failures.failure(
        LibraryErrorCode.RESULT_NOT_READY,
        f"Task '{node_id}' has not completed yet in workflow '{workflow_id}'",
        {"workflow_id": workflow_id, "node_id": node_id},
    )


def nodes_op(workflow_id: str) -> Op[list[tuple[Any, ...]]]:
    """WF_GET_NODES rows: (index, node_id, task name, status, result, started_at, completed_at)."""
    res = yield Query(wf_sql.WF_GET_NODES, {"id": workflow_id})
    return [tuple(r) for r in res.rows]
