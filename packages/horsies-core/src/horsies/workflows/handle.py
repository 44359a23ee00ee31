"""`WorkflowHandle`: follow and steer a started workflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from horsies.codec import task_result_from_json
from horsies.results import TaskError, TaskResult
from horsies.workflows.context import WorkflowHandleMissingIdError
from horsies.workflows.nodes import NodeKey, SubWorkflowNode, TaskNode
from horsies.workflows.status import WorkflowStatus, WorkflowTaskStatus
from horsies.workflows.store import reads
from horsies.workflows.store.operations import cancel_program, pause_op, resume_program

if TYPE_CHECKING:
    from horsies.broker.postgres import PostgresBroker

__all__ = ["WorkflowHandle", "WorkflowTaskInfo"]

T = TypeVar("T")
_NodeRef = TaskNode[T] | SubWorkflowNode[T] | NodeKey[T]


@dataclass(frozen=True, slots=True)
class WorkflowTaskInfo:
    """One node of a workflow as `WorkflowHandle.tasks()` reports it."""

    index: int
    """Position of the node in the spec."""
    name: str
    """Task name (for a sub-workflow node: the child workflow's name)."""
    status: WorkflowTaskStatus
    """Current node status."""
    result: TaskResult[Any, TaskError] | None
    """Stored result (COMPLETED/FAILED nodes), else None."""
    started_at: datetime | None
    """When the node started running: for a task node, when its task started (the task row's
    ``started_at``; for a retried task, the start of its latest attempt, so while a retry waits
    this is still the previous attempt's start); for a sub-workflow node, when its child workflow
    started. Always later than the ``completed_at`` of the dependencies that made it ready (all
    of them under ``join="all"``). None while the node has not started (PENDING, READY, ENQUEUED)
    and for a node that never ran: SKIPPED, or whose task was cancelled before it started."""
    completed_at: datetime | None
    """When the node's run ended (COMPLETED or FAILED after it started). None while it runs and
    for a node that never ran (``started_at`` None), even when its status is terminal."""
    node_id: str | None = None
    """The node's id (not in the original API; handy to key a display)."""


def _node_id(node: _NodeRef[Any]) -> str:
    node_id = node.node_id
    if node_id is None:
        raise WorkflowHandleMissingIdError(
            "result_for() needs a node with a node_id: build the node into a spec first or give "
            "it node_id=..."
        )
    return node_id


def _task_info(row: tuple[Any, ...]) -> WorkflowTaskInfo:
    index, node_id, name, status, result, started_at, completed_at = row
    return WorkflowTaskInfo(
        index=index,
        name=name,
        status=WorkflowTaskStatus(status),
        result=None if result is None else task_result_from_json(result),
        started_at=started_at,
        completed_at=completed_at,
        node_id=node_id,
    )


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """A started workflow: status, results and control (pause, resume, cancel).

    Every method has a sync form and an ``*_async`` twin; the sync ones may be called from any
    thread. Obtain one from ``spec.start()`` / ``start_workflow(...)``, or build it from a stored
    id: ``WorkflowHandle(workflow_id, app.broker)``.
    """

    workflow_id: str
    broker: PostgresBroker

    # -- status and results ---------------------------------------------------------------------

    def status(self) -> WorkflowStatus:
        """The current status; ``ValueError`` for an unknown workflow id."""
        return self.broker.execute(reads.status_op(self.workflow_id), action="workflow_status")

    async def status_async(self) -> WorkflowStatus:
        """Async twin of :meth:`status`."""
        return await self.broker.execute_async(
            reads.status_op(self.workflow_id), action="workflow_status"
        )

    def get(self, timeout_ms: int | None = None) -> TaskResult[Any, TaskError]:
        """Wait for the workflow to end and return its outcome.

        COMPLETED: the final result (the output node's result, or ``{node_id: TaskResult | None}``
        over the sink nodes). FAILED / CANCELLED: err with the stored error (or
        ``WORKFLOW_FAILED`` / ``WORKFLOW_CANCELLED``). PAUSED: err ``WORKFLOW_PAUSED`` at once.
        Deadline passed: err ``WAIT_TIMEOUT``. ``timeout_ms`` None or 0 waits forever. Unknown id:
        ``ValueError``. Not cached: every call reads the database.
        """
        return self.broker.run_program(
            reads.get_program(self.broker.workflow_waiters, self.workflow_id, timeout_ms)
        )

    async def get_async(self, timeout_ms: int | None = None) -> TaskResult[Any, TaskError]:
        """Async twin of :meth:`get`."""
        return await self.broker.run_program_async(
            reads.get_program(self.broker.workflow_waiters, self.workflow_id, timeout_ms)
        )

    def results(self) -> dict[str, TaskResult[Any, TaskError]]:
        """Every node that has a result (COMPLETED or FAILED), keyed by node id."""
        return self.broker.execute(reads.results_op(self.workflow_id), action="workflow_results")

    async def results_async(self) -> dict[str, TaskResult[Any, TaskError]]:
        """Async twin of :meth:`results`."""
        return await self.broker.execute_async(
            reads.results_op(self.workflow_id), action="workflow_results"
        )

    def result_for(self, node: _NodeRef[T]) -> TaskResult[T, TaskError]:
        """One node's result without waiting: err ``RESULT_NOT_READY`` until it has one.

        Raises `WorkflowHandleMissingIdError` for a node without a node_id.
        """
        return self.broker.execute(
            reads.node_result_op(self.workflow_id, _node_id(node)),
            action="workflow_result_for",
        )

    async def result_for_async(self, node: _NodeRef[T]) -> TaskResult[T, TaskError]:
        """Async twin of :meth:`result_for`."""
        return await self.broker.execute_async(
            reads.node_result_op(self.workflow_id, _node_id(node)),
            action="workflow_result_for",
        )

    def tasks(self) -> list[WorkflowTaskInfo]:
        """Every node, ordered by index."""
        rows = self.broker.execute(reads.nodes_op(self.workflow_id), action="workflow_tasks")
        return [_task_info(row) for row in rows]

    async def tasks_async(self) -> list[WorkflowTaskInfo]:
        """Async twin of :meth:`tasks`."""
        rows = await self.broker.execute_async(
            reads.nodes_op(self.workflow_id), action="workflow_tasks"
        )
        return [_task_info(row) for row in rows]

    # -- control --------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the workflow and its child workflows: unstarted tasks are cancelled, running ones
        finish but no longer change anything; CANCELLED is final. A child cancelled on its own
        fails its parent's node, so the parent never waits for it forever. No-op on a finished
        workflow."""
        self.broker.run_program(cancel_program(self.broker.app, self.workflow_id))

    async def cancel_async(self) -> None:
        """Async twin of :meth:`cancel`."""
        await self.broker.run_program_async(cancel_program(self.broker.app, self.workflow_id))

    def pause(self) -> bool:
        """RUNNING -> PAUSED, with every running child workflow. Tasks already enqueued may still
        run (their results are acted upon at resume); nothing new starts until :meth:`resume`.
        False if not RUNNING."""
        return self.broker.execute(
            pause_op(self.workflow_id), action="workflow_pause", transaction=True
        )

    async def pause_async(self) -> bool:
        """Async twin of :meth:`pause`."""
        return await self.broker.execute_async(
            pause_op(self.workflow_id), action="workflow_pause", transaction=True
        )

    def resume(self) -> bool:
        """PAUSED -> RUNNING with its paused child workflows: pending nodes are re-evaluated and
        ready ones enqueued; a workflow whose nodes all ended meanwhile is finished.
        False if not PAUSED."""
        return self.broker.run_program(resume_program(self.broker.app, self.workflow_id))

    async def resume_async(self) -> bool:
        """Async twin of :meth:`resume`."""
        return await self.broker.run_program_async(
            resume_program(self.broker.app, self.workflow_id)
        )
