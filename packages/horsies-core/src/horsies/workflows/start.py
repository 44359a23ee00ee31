"""Starting a workflow: `start_workflow` and `start_workflow_async`.

With the ``otel`` extra, a start is a span (`horsies.tracing.start_workflow`) whose context every
node's task carries, so the run spans of all the nodes (those of child workflows too) are its
children, in its trace.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING

from horsies import tracing
from horsies.errors import ErrorCode, WorkflowValidationError, raise_collected
from horsies.workflows.handle import WorkflowHandle
from horsies.workflows.nodes import SubWorkflowNode, TaskNode
from horsies.workflows.store.operations import start_program
from horsies.workflows.store.rows import StartRows, start_rows

if TYPE_CHECKING:
    from horsies.broker.caller_connection import CallerConnection
    from horsies.broker.postgres import PostgresBroker
    from horsies.workflows.spec import WorkflowSpec

__all__ = ["start_workflow", "start_workflow_async"]


def _prepared(
    spec: WorkflowSpec, broker: PostgresBroker, workflow_id: str, span: tracing.TaskSpan | None
) -> StartRows:
    errors: list[WorkflowValidationError] = []
    if broker.app is None and any(isinstance(n, SubWorkflowNode) for n in spec.tasks):
        errors.append(
            WorkflowValidationError(
                "workflow has sub-workflow nodes but the broker has no app",
                code=ErrorCode.WORKFLOW_SUBWORKFLOW_APP_MISSING,
            ).with_help("start it with the broker of the app (app.get_broker() / app.broker)")
        )
    for node in spec.tasks:
        if not isinstance(node, TaskNode):
            continue
        unresolved = [
            (field, code)
            for field, value, code in (
                ("queue", node.queue, ErrorCode.WORKFLOW_UNRESOLVED_QUEUE),
                ("priority", node.priority, ErrorCode.WORKFLOW_UNRESOLVED_PRIORITY),
            )
            if value is None
        ]
        errors.extend(
            WorkflowValidationError(
                f"TaskNode '{node.node_id}' has no resolved {field}", code=code
            ).with_help(f"build the spec with app.workflow(...) or give the node {field}=...")
            for field, code in unresolved
        )
    raise_collected(errors, "workflow start")
    return start_rows(
        spec,
        workflow_id,
        max_payload_bytes=broker.max_payload_bytes,
        carrier=None if span is None else span.carrier(),
    )


def start_workflow(
    spec: WorkflowSpec,
    broker: PostgresBroker,
    workflow_id: str | None = None,
    *,
    within: CallerConnection | None = None,
) -> WorkflowHandle:
    """Start ``spec`` in one transaction: the workflow row, its node rows and its root tasks.

    With ``workflow_id`` set and a workflow of that id already present, nothing changes and a
    handle to the existing workflow is returned (idempotent start). Raises
    `WorkflowValidationError` (E014/E015) for a TaskNode without a resolved queue or priority,
    ``SerializationError`` for unencodable node arguments, ``BrokerError`` for database failures.
    With ``within``, all of it is written through the caller's connection, in its transaction.
    """
    workflow_id = workflow_id or str(uuid.uuid4())
    span = tracing.start_workflow(spec.name, workflow_id)
    with span or contextlib.nullcontext():
        rows = _prepared(spec, broker, workflow_id, span)
        broker.run_program(start_program(broker.app, rows), within)
    return WorkflowHandle(workflow_id, broker)


async def start_workflow_async(
    spec: WorkflowSpec,
    broker: PostgresBroker,
    workflow_id: str | None = None,
    *,
    within: CallerConnection | None = None,
) -> WorkflowHandle:
    """Async twin of `start_workflow`."""
    workflow_id = workflow_id or str(uuid.uuid4())
    span = tracing.start_workflow(spec.name, workflow_id)
    with span or contextlib.nullcontext():
        rows = _prepared(spec, broker, workflow_id, span)
        await broker.run_program_async(start_program(broker.app, rows), within)
    return WorkflowHandle(workflow_id, broker)
