"""The rows of a workflow about to start: its workflow row and node rows, built from its spec
(node arguments encoded here, before anything is written)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson

from horsies.codec import SerializationError, args_to_json, check_payload_size, kwargs_to_json
from horsies.tracing import with_carrier
from horsies.workflows.nodes import SubWorkflowNode
from horsies.workflows.status import OnError

if TYPE_CHECKING:
    from horsies.workflows.nodes import AnyNode
    from horsies.workflows.spec import WorkflowSpec

__all__ = ["StartRows", "start_rows"]


@dataclass(frozen=True, slots=True)
class StartRows:
    """The parameters of one workflow's WF_INSERT and WF_NODES_INSERT, built from its spec."""

    workflow: dict[str, Any]
    nodes: list[dict[str, Any]]


def _task_options_json(node: Any) -> str:
    """The node task's options JSON, with the node's own good_until when it sets one."""
    options = node.fn.task_options
    if node.good_until is not None:
        options = options.model_copy(update={"good_until": node.good_until})
    return cast("str", options.to_json())


def _success_policy_json(spec: WorkflowSpec) -> str | None:
    policy = spec.success_policy
    if policy is None:
        return None
    return orjson.dumps(
        {
            "cases": [
                {"required_indices": [cast("int", n.index) for n in case.required]}
                for case in policy.cases
            ],
            "optional_indices": [cast("int", n.index) for n in (policy.optional or [])],
        }
    ).decode()


def _node_row(
    node: AnyNode, max_payload_bytes: int | None, carrier: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One node's row; with a trace ``carrier``, its task options carry it, and so its task
    (for a sub-workflow node: the child workflow's node rows, `Session.start_child`)."""
    deps = [cast("int", d.index) for d in node.waits_for]
    args = args_to_json(tuple(node.args)) if node.args else None
    kwargs = kwargs_to_json(node.kwargs) if node.kwargs else None
    check_payload_size(f"arguments of node '{node.node_id}'", (args, kwargs), max_payload_bytes)
    common: dict[str, Any] = {
        "task_index": node.index,
        "node_id": node.node_id,
        "task_args": args,
        "task_kwargs": kwargs,
        "dependencies": deps,
        "args_from": {key: dep.index for key, dep in node.args_from.items()} or None,
        "workflow_ctx_from": (
            None if node.workflow_ctx_from is None else [d.node_id for d in node.workflow_ctx_from]
        ),
        "allow_failed_deps": node.allow_failed_deps,
        "join_type": node.join,
        "min_success": node.min_success,
        "status": "PENDING" if deps else "READY",
        "has_conditions": node.run_when is not None or node.skip_when is not None,
    }
    if isinstance(node, SubWorkflowNode):
        definition = node.workflow_def
        return common | {
            "task_name": definition.name,
            "queue_name": "default",
            "priority": 100,
            "task_options": None if carrier is None else with_carrier(None, carrier),
            "is_subworkflow": True,
            "sub_workflow_name": definition.name,
            "sub_workflow_module": definition.__module__,
            "sub_workflow_qualname": definition.__qualname__,
            "sub_workflow_retry_mode": node.retry_mode.value,
        }
    return common | {
        "task_name": node.fn.task_name,
        "queue_name": node.queue or "default",
        "priority": node.priority if node.priority is not None else 100,
        "task_options": (
            _task_options_json(node)
            if carrier is None
            else with_carrier(_task_options_json(node), carrier)
        ),
        "is_subworkflow": False,
        "sub_workflow_name": None,
        "sub_workflow_module": None,
        "sub_workflow_qualname": None,
        "sub_workflow_retry_mode": None,
    }


def _build_params(spec: WorkflowSpec, *, root: bool) -> dict[str, str | None]:
    """The ``build_args`` / ``build_kwargs`` columns: a root workflow built by ``build_with``
    stores its parameters, so a worker that never built it can rebuild it for its conditions. A
    child is rebuilt from its parent node's arguments instead."""
    none: dict[str, str | None] = {"build_args": None, "build_kwargs": None}
    if not root or spec.build_params is None:
        return none
    args, kwargs = spec.build_params
    try:
        return {
            "build_args": args_to_json(args) if args else None,
            "build_kwargs": kwargs_to_json(kwargs) if kwargs else None,
        }
    except SerializationError as exc:
        if not any(node.run_when or node.skip_when for node in spec.tasks):
            return none  # nothing needs a rebuild
        raise SerializationError(
            f"the build_with parameters of workflow '{spec.name}' cannot be stored, and workers "
            f"need them to rebuild its conditions: {exc}"
        ) from exc


def check_payloads(spec: WorkflowSpec, max_payload_bytes: int | None) -> None:
    """Raise `PayloadTooLargeError` (or SerializationError) for a node of ``spec`` whose arguments
    cannot be stored (a child built by ``build_with``, checked before its start is written)."""
    for node in spec.tasks:
        _node_row(node, max_payload_bytes)


def start_rows(
    spec: WorkflowSpec,
    workflow_id: str,
    *,
    parent_id: str | None = None,
    parent_index: int | None = None,
    depth: int = 0,
    root_id: str | None = None,
    max_payload_bytes: int | None = None,
    carrier: Mapping[str, str] | None = None,
) -> StartRows:
    """Encode a spec's workflow row and node rows (SerializationError for unencodable args,
    PayloadTooLargeError for a node's arguments above ``max_payload_bytes``); every node carries
    the trace ``carrier`` of the start, if any."""
    output = spec.output
    return StartRows(
        workflow={
            "id": workflow_id,
            "name": spec.name,
            "on_error": OnError(spec.on_error).value,
            "output_task_index": None if output is None else output.index,
            "success_policy": _success_policy_json(spec),
            "module": spec.workflow_def_module,
            "qualname": spec.workflow_def_qualname,
            **_build_params(spec, root=parent_id is None),
            "parent_workflow_id": parent_id,
            "parent_task_index": parent_index,
            "depth": depth,
            "root_workflow_id": root_id or workflow_id,
        },
        nodes=[_node_row(node, max_payload_bytes, carrier) for node in spec.tasks],
    )
