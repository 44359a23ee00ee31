"""The results the workflow engine writes on nodes itself: for a node whose task ended without a
result, and for a sub-workflow node whose child workflow ended."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson

from horsies.codec import loads_json, rehydrate_value, task_result_to_json
from horsies.failures import failure
from horsies.results import LibraryErrorCode, TaskResult
from horsies.workflows.context import SubWorkflowError, SubWorkflowSummary
from horsies.workflows.status import WorkflowStatus

__all__ = ["dumps", "sub_workflow_failed_json", "summary_json", "synthesized_result"]


def dumps(rows: object) -> str:
    """Plain JSON text of engine-made rows (statement parameters, summaries)."""
    return orjson.dumps(rows).decode()


def synthesized_result(task_id: str, task_status: str) -> str:
    """The result recorded on a node whose task ended without one (cancelled, or written outside
    the worker)."""
    data = {"task_id": task_id, "task_status": task_status, "recovery": "case_1_7"}
    if task_status == "CANCELLED":
        return task_result_to_json(
            failure(LibraryErrorCode.TASK_CANCELLED, f"Task {task_id} was cancelled", data)
        )
    if task_status == "COMPLETED":
        return task_result_to_json(
            failure(
                LibraryErrorCode.RESULT_NOT_AVAILABLE,
                "Result not available - task may not have been executed",
                data,
            )
        )
    return task_result_to_json(
        failure(
            LibraryErrorCode.WORKER_CRASHED, f"Task {task_id} failed without a stored result", data
        )
    )


def summary_json(row: Sequence[Any]) -> str:
    """SubWorkflowSummary as the plain JSON object stored on the parent node, from a WF_SUMMARY
    row."""
    status, result, error, total, completed, failed, skipped = row
    output: Any = None
    if status == WorkflowStatus.COMPLETED.value and result is not None:
        with_tags = loads_json(result)
        if isinstance(with_tags, dict):
            output = cast("dict[str, Any]", with_tags).get("ok")
    error_summary: str | None = None
    if error is not None:
        payload = loads_json(error)
        if isinstance(payload, dict):
            message = cast("dict[str, Any]", payload).get("message")
            error_summary = message if isinstance(message, str) else None
    return dumps(
        {
            "status": status,
            "success_case": None,
            "output": output,
            "total_tasks": int(total),
            "completed_tasks": int(completed),
            "failed_tasks": int(failed),
            "skipped_tasks": int(skipped),
            "error_summary": error_summary,
        }
    )


def sub_workflow_failed_json(child_id: str, status: str, summary_json: str) -> str:
    summary = SubWorkflowSummary[Any].from_json(
        cast("dict[str, Any]", rehydrate_value(loads_json(summary_json)))
    )
    error = SubWorkflowError(
        error_code=LibraryErrorCode.SUBWORKFLOW_FAILED,
        message=f"Subworkflow {child_id} failed with status {status}",
        sub_workflow_id=child_id,
        sub_workflow_summary=summary,
    )
    return task_result_to_json(TaskResult(err=error))
