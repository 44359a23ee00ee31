"""Short names of the workflow node statuses, for the node tables written in workflow tests."""

from __future__ import annotations

from horsies.workflows.status import WorkflowTaskStatus

P = WorkflowTaskStatus.PENDING
R = WorkflowTaskStatus.READY
E = WorkflowTaskStatus.ENQUEUED
RUN = WorkflowTaskStatus.RUNNING
C = WorkflowTaskStatus.COMPLETED
F = WorkflowTaskStatus.FAILED
S = WorkflowTaskStatus.SKIPPED
