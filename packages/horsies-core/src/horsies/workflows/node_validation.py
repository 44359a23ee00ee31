"""The first gate of building a `WorkflowSpec`: each listed node and its id, and `on_error`.

Every entry of `tasks` must be a usable node (a `TaskNode` of a task function or a `SubWorkflowNode`
of a `WorkflowDefinition` subclass, listed once), and every node id, given or generated from the
workflow name, must be non-empty, at most 128 characters, match ``^[A-Za-z0-9_\\-:.]+$`` and be
unique (E003, E004). The graph checks name nodes by these ids, so errors here stop the build before
them. An invalid `on_error` is reported with the graph's errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from horsies.errors import ErrorCode, HorsiesError, WorkflowValidationError
from horsies.tasks.function import TaskFunction
from horsies.workflows.definition import WorkflowDefinition
from horsies.workflows.nodes import (
    MAX_NODE_ID_LENGTH,
    NODE_ID_PATTERN,
    AnyNode,
    SubWorkflowNode,
    TaskNode,
    slugify,
)
from horsies.workflows.status import OnError

__all__ = ["check_node_ids", "coerce_on_error"]


def coerce_on_error(value: object) -> tuple[OnError, HorsiesError | None]:
    """`value` as an `OnError` (its value or name as a string works too), or `OnError.FAIL` and
    the error to report."""
    if isinstance(value, OnError):
        return value, None
    if isinstance(value, str):
        for member in OnError:
            if value.strip().lower() in (member.value, member.name.lower()):
                return member, None
    error = WorkflowValidationError("invalid on_error").with_note(f"got {value!r}")
    return OnError.FAIL, error.with_help("use OnError.FAIL or OnError.PAUSE")


def _id_error(message: str, code: ErrorCode, note: str) -> WorkflowValidationError:
    return WorkflowValidationError(message, code=code).with_note(note)


def check_node_ids(name: str, tasks: Sequence[object]) -> tuple[list[str], list[HorsiesError]]:
    """The id each node has or will get (by index), and what is wrong with the nodes and ids."""
    errors: list[HorsiesError] = []
    ids: list[str] = []
    first_index: dict[str, int] = {}
    seen_nodes: dict[int, int] = {}
    for index, node in enumerate(tasks):
        structural = _structure_error(node, index, seen_nodes)
        if structural is not None:
            errors.append(structural)
            ids.append("")
            continue
        node = cast(AnyNode, node)
        node_id = node.node_id
        auto = node_id is None
        if node_id is None:
            node_id = f"{slugify(name)}:{index}"
        ids.append(node_id)
        where = f"tasks[{index}] ({node.name})"
        if not isinstance(node_id, str) or not node_id.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
            errors.append(
                _id_error(
                    "empty node id",
                    ErrorCode.WORKFLOW_INVALID_NODE_ID,
                    f"{where} has node_id={node_id!r}",
                ).with_help("give the node a non-empty id, or leave node_id unset")
            )
        elif len(node_id) > MAX_NODE_ID_LENGTH:
            if auto:
                errors.append(
                    _id_error(
                        "workflow name too long",
                        ErrorCode.WORKFLOW_INVALID_NODE_ID,
                        f"the generated node id of {where} has {len(node_id)} characters "
                        f"(at most {MAX_NODE_ID_LENGTH})",
                    ).with_help("shorten the workflow name, or give every node an explicit node_id")
                )
            else:
                errors.append(
                    _id_error(
                        "node id too long",
                        ErrorCode.WORKFLOW_INVALID_NODE_ID,
                        f"{where} has a node_id of {len(node_id)} characters "
                        f"(at most {MAX_NODE_ID_LENGTH})",
                    )
                )
        elif not NODE_ID_PATTERN.match(node_id):
            errors.append(
                _id_error(
                    f"invalid node id '{node_id}'",
                    ErrorCode.WORKFLOW_INVALID_NODE_ID,
                    f"{where}: node ids may contain only ASCII letters, digits, "
                    "'_', '-', ':' and '.'",
                ).with_help(f"slugify({node_id!r}) gives {slugify(node_id)!r}")
            )
        elif node_id in first_index:
            errors.append(
                _id_error(
                    f"duplicate node id '{node_id}'",
                    ErrorCode.WORKFLOW_DUPLICATE_NODE_ID,
                    f"tasks[{first_index[node_id]}] and tasks[{index}] both use it",
                ).with_help("node ids must be unique within a workflow")
            )
        else:
            first_index[node_id] = index
    return ids, errors


def _structure_error(
    node: object, index: int, seen_nodes: dict[int, int]
) -> WorkflowValidationError | None:
    """A node that is not usable at all: not a node, a wrong `fn` / `workflow_def`, or listed
    twice in `tasks`."""
    node_key = id(node)
    if isinstance(node, TaskNode):
        fn = cast("TaskNode[Any]", node).fn
        if not isinstance(fn, TaskFunction):  # pyright: ignore[reportUnnecessaryIsInstance]
            return (
                WorkflowValidationError("TaskNode fn is not a task function")
                .with_note(f"tasks[{index}] has fn={fn!r}")
                .with_help(
                    "decorate the function with @app.task and pass what the decorator returns"
                )
            )
        if fn.task_limit is not None:
            # Refused rather than run unlimited: a node's key would come from arguments that
            # exist only once its dependencies finish, inside the engine's locks, where no user
            # code (a key function) may run.
            return (
                WorkflowValidationError(
                    "a task under a rate or concurrency limit cannot be a workflow node yet",
                    code=ErrorCode.WORKFLOW_NODE_UNDER_LIMIT,
                )
                .with_note(f"tasks[{index}] runs {fn.task_name}, limited by {fn.task_limit.name!r}")
                .with_help(
                    "send the limited task from the node's task (task.send(...)), or define a"
                    " twin task without the limit for the workflow"
                )
            )
    elif isinstance(node, SubWorkflowNode):
        definition = cast("SubWorkflowNode[Any]", node).workflow_def
        if not isinstance(definition, type) or not issubclass(definition, WorkflowDefinition):  # pyright: ignore[reportUnnecessaryIsInstance]
            return WorkflowValidationError(
                "SubWorkflowNode workflow_def is not a WorkflowDefinition subclass"
            ).with_note(f"tasks[{index}] has workflow_def={definition!r}")
    else:
        return WorkflowValidationError(
            "workflow tasks must be TaskNode or SubWorkflowNode objects"
        ).with_note(f"tasks[{index}] is {node!r}")
    previous = seen_nodes.setdefault(node_key, index)
    if previous != index:
        return WorkflowValidationError(
            "the same node object is listed twice", code=ErrorCode.WORKFLOW_DUPLICATE_NODE_ID
        ).with_note(f"tasks[{previous}] and tasks[{index}] are the same node")
    return None
