"""Workflow and workflow-node states, and the small enums of a workflow's configuration."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "WORKFLOW_TASK_TERMINAL_STATES",
    "WORKFLOW_TERMINAL_STATES",
    "OnError",
    "SubWorkflowRetryMode",
    "WorkflowStatus",
    "WorkflowTaskStatus",
]


class WorkflowStatus(StrEnum):
    """State of a workflow (value == name, as stored in ``horsies_workflows.status``)."""

    PENDING = "PENDING"
    """Defined but not started (workflows start RUNNING; kept for compatibility)."""
    RUNNING = "RUNNING"
    """Executing."""
    COMPLETED = "COMPLETED"
    """Every node terminal and the success criteria met (terminal)."""
    FAILED = "FAILED"
    """Every node terminal and the success criteria not met (terminal)."""
    PAUSED = "PAUSED"
    """Stopped by ``on_error=PAUSE`` or ``pause()``; waits for ``resume()`` or ``cancel()``."""
    CANCELLED = "CANCELLED"
    """Cancelled (terminal)."""

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED."""
        return self in WORKFLOW_TERMINAL_STATES


class WorkflowTaskStatus(StrEnum):
    """State of one workflow node (value == name, as stored in
    ``horsies_workflow_tasks.status``)."""

    PENDING = "PENDING"
    """Waiting for its dependencies."""
    READY = "READY"
    """Dependencies satisfied, not enqueued yet."""
    ENQUEUED = "ENQUEUED"
    """Task row created (sub-workflow node: child being created)."""
    RUNNING = "RUNNING"
    """Task executing (sub-workflow node: child workflow running)."""
    COMPLETED = "COMPLETED"
    """Finished with an ok result (terminal)."""
    FAILED = "FAILED"
    """Finished with an error result (terminal)."""
    SKIPPED = "SKIPPED"
    """Not run: upstream failure or skip, a condition, an impossible join, or cancel
    (terminal)."""

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and SKIPPED."""
        return self in WORKFLOW_TASK_TERMINAL_STATES


WORKFLOW_TERMINAL_STATES: Final[frozenset[WorkflowStatus]] = frozenset(
    {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED}
)
"""Workflow states that never change again."""

WORKFLOW_TASK_TERMINAL_STATES: Final[frozenset[WorkflowTaskStatus]] = frozenset(
    {WorkflowTaskStatus.COMPLETED, WorkflowTaskStatus.FAILED, WorkflowTaskStatus.SKIPPED}
)
"""Node states that never change again."""


class OnError(StrEnum):
    """What a workflow does when a node fails."""

    FAIL = "fail"
    """Record the error, keep going (dependents skip unless they allow failed dependencies); the
    workflow ends FAILED."""
    PAUSE = "pause"
    """Pause the workflow at once; ``resume()`` continues it, ``cancel()`` ends it."""


class SubWorkflowRetryMode(StrEnum):
    """How a failed child workflow would be retried (only ``RERUN_FAILED_ONLY`` is accepted)."""

    RERUN_FAILED_ONLY = "rerun_failed_only"
    RERUN_ALL = "rerun_all"
    NO_RERUN = "no_rerun"
