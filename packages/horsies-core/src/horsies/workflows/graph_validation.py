"""The second gate of building a `WorkflowSpec`: every rule about how its nodes connect.

Roots (E005), dependencies (E006), cycles (E007, also between nested definitions), `args_from`
(E008), `workflow_ctx_from` (E009, E010), each task node's arguments against its task's parameters
(E019), `output` (E011), `success_policy` (E012), `join` /
`min_success` (E013) and the sub-workflow retry mode (E017) are all checked, and every problem is
returned, so one build reports them together. Nodes are told apart by identity and named in
messages by the ids the first gate settled.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, cast

from horsies.errors import ErrorCode, HorsiesError, SourceLocation, WorkflowValidationError
from horsies.tasks.function import TaskFunction
from horsies.workflows.nodes import (
    JOIN_TYPES,
    AnyNode,
    SubWorkflowNode,
    SuccessCase,
    SuccessPolicy,
    TaskNode,
    definition_nodes,
)
from horsies.workflows.status import SubWorkflowRetryMode

__all__ = ["check_graph"]


class _Graph:
    """Identity-based lookups over one spec's nodes, with their (final) ids for messages."""

    def __init__(self, tasks: Sequence[AnyNode], ids: Sequence[str]) -> None:
        self.tasks = tasks
        self.ids = ids
        self.index_of: dict[int, int] = {id(node): index for index, node in enumerate(tasks)}

    def contains(self, value: object) -> bool:
        return id(value) in self.index_of and isinstance(value, TaskNode | SubWorkflowNode)

    def label(self, index: int) -> str:
        return f"'{self.ids[index]}'"

    def foreign(self, value: object) -> str:
        """How to name a value that is not one of the spec's nodes."""
        if isinstance(value, str):
            return f"the string {value!r} (attribute names work only in a WorkflowDefinition)"
        if isinstance(value, TaskNode | SubWorkflowNode):
            node = cast(AnyNode, value)
            if node.node_id is not None:
                return f"node '{node.node_id}' ({node.name})"
            return f"a {type(node).__name__} of {node.name!r}"
        return repr(value)


def check_graph(
    name: str,
    tasks: Sequence[AnyNode],
    output: AnyNode | None,
    success_policy: SuccessPolicy | None,
    node_ids: Sequence[str],
) -> list[HorsiesError]:
    """Every rule of the graph of workflow `name`, all errors collected (none: the graph is valid).

    `node_ids` are the ids the nodes have or will get, by index, as `check_node_ids` gave them.
    """
    graph = _Graph(tasks, node_ids)
    errors: list[HorsiesError] = []
    if not any(not node.waits_for for node in tasks):
        error = WorkflowValidationError(
            "workflow has no root tasks", code=ErrorCode.WORKFLOW_NO_ROOT_TASKS
        )
        if not tasks:
            error = error.with_note("tasks is empty")
        else:
            error = error.with_note("every node waits for another node")
        errors.append(error.with_help("at least one node must have an empty waits_for"))
    dependencies: list[list[int]] = []
    for index, node in enumerate(tasks):
        dependencies.append(_check_dependencies(graph, index, node, errors))
        _check_sources(graph, index, node, errors)
        if isinstance(node, TaskNode):
            _check_arguments(graph, index, node, errors)
        _check_join(graph, index, node, errors)
        if isinstance(node, SubWorkflowNode):
            _check_retry_mode(graph, index, node, errors)
    cycle = _find_cycle(dependencies)
    if cycle is not None:
        errors.append(
            WorkflowValidationError(
                "cycle detected in waits_for", code=ErrorCode.WORKFLOW_CYCLE_DETECTED
            )
            .with_note(" -> ".join(graph.label(index) for index in cycle))
            .with_note("each node waits for the next one")
            .with_help("a workflow must be a directed acyclic graph: remove one of these edges")
        )
    definition_cycle = _find_definition_cycle(name, tasks)
    if definition_cycle is not None:
        errors.append(
            WorkflowValidationError(
                "sub-workflow definitions contain each other",
                code=ErrorCode.WORKFLOW_CYCLE_DETECTED,
            )
            .with_note(" -> ".join(f"'{workflow}'" for workflow in definition_cycle))
            .with_note("each workflow runs the next one as a sub-workflow")
            .with_help("a workflow cannot contain itself, directly or through its children")
        )
    _check_output(graph, output, errors)
    _check_success_policy(graph, success_policy, errors)
    return errors


def _check_dependencies(
    graph: _Graph, index: int, node: AnyNode, errors: list[HorsiesError]
) -> list[int]:
    """E006 for each dependency that is not in the workflow; the valid dependency indices."""
    waits_for = cast(object, node.waits_for)
    if isinstance(waits_for, TaskNode | SubWorkflowNode) or not isinstance(waits_for, Sequence):
        errors.append(
            WorkflowValidationError(
                "waits_for must be a list of nodes", code=ErrorCode.WORKFLOW_INVALID_DEPENDENCY
            )
            .with_note(f"node {graph.label(index)} has waits_for={waits_for!r}")
            .with_help("write waits_for=[other_node]")
        )
        return []
    valid: list[int] = []
    for dependency in cast("Sequence[object]", waits_for):
        if graph.contains(dependency):
            valid.append(graph.index_of[id(dependency)])
            continue
        errors.append(
            WorkflowValidationError(
                f"node {graph.label(index)} waits for a node that is not in the workflow",
                code=ErrorCode.WORKFLOW_INVALID_DEPENDENCY,
            )
            .with_note(f"dependency: {graph.foreign(dependency)}")
            .with_help("add the dependency to the workflow's tasks, or remove it from waits_for")
        )
    return sorted(set(valid))


def _waits_for_contains(node: AnyNode, value: object) -> bool:
    waits_for = cast(object, node.waits_for)
    if not isinstance(waits_for, Sequence):
        return False
    return any(entry is value for entry in cast("Sequence[object]", waits_for))


def _check_sources(graph: _Graph, index: int, node: AnyNode, errors: list[HorsiesError]) -> None:
    """E008 (`args_from`), E009 / E010 (`workflow_ctx_from`)."""
    args_from = cast(object, node.args_from)
    if not isinstance(args_from, Mapping):
        errors.append(
            WorkflowValidationError(
                "args_from must map keyword names to nodes",
                code=ErrorCode.WORKFLOW_INVALID_ARGS_FROM,
            ).with_note(f"node {graph.label(index)} has args_from={args_from!r}")
        )
    else:
        for key, source in cast("Mapping[object, object]", args_from).items():
            if not _waits_for_contains(node, source):
                errors.append(
                    WorkflowValidationError(
                        f"args_from['{key}'] of node {graph.label(index)} is not in its waits_for",
                        code=ErrorCode.WORKFLOW_INVALID_ARGS_FROM,
                    )
                    .with_note(f"source: {_source_label(graph, source)}")
                    .with_help("a node can only receive results of nodes it waits for")
                )
    ctx_from = cast(object, node.workflow_ctx_from)
    if ctx_from is None:
        return
    if isinstance(ctx_from, TaskNode | SubWorkflowNode) or not isinstance(ctx_from, Sequence):
        errors.append(
            WorkflowValidationError(
                "workflow_ctx_from must be a list of nodes",
                code=ErrorCode.WORKFLOW_INVALID_CTX_FROM,
            ).with_note(f"node {graph.label(index)} has workflow_ctx_from={ctx_from!r}")
        )
        return
    entries = cast("Sequence[object]", ctx_from)
    for source in entries:
        if not _waits_for_contains(node, source):
            errors.append(
                WorkflowValidationError(
                    f"workflow_ctx_from of node {graph.label(index)} lists a node that is not in "
                    "its waits_for",
                    code=ErrorCode.WORKFLOW_INVALID_CTX_FROM,
                )
                .with_note(f"source: {_source_label(graph, source)}")
                .with_help("a node's context can only hold results of nodes it waits for")
            )
    if entries and isinstance(node, TaskNode) and not _declares_workflow_ctx(node.fn):
        error = WorkflowValidationError(
            f"task '{node.name}' does not declare a 'workflow_ctx' parameter",
            code=ErrorCode.WORKFLOW_CTX_PARAM_MISSING,
        )
        location = SourceLocation.from_function(node.fn)
        if location is not None:
            error = error.with_location(location)
        errors.append(
            error.with_note(f"node {graph.label(index)} sets workflow_ctx_from").with_help(
                "add the parameter: workflow_ctx: WorkflowContext | None = None"
            )
        )


def _check_arguments(
    graph: _Graph, index: int, node: TaskNode[Any], errors: list[HorsiesError]
) -> None:
    """E019: the node's static arguments, with what the engine passes when it runs, must fit."""
    fn = cast(object, node.fn)
    if not isinstance(fn, TaskFunction):
        return
    task = cast("TaskFunction[..., Any]", fn)
    args_from = cast(object, node.args_from)
    later: set[str] = set()
    if isinstance(args_from, Mapping):
        later.update(str(key) for key in cast("Mapping[object, object]", args_from))
    if node.workflow_ctx_from and _declares_workflow_ctx(task):
        later.add("workflow_ctx")  # passed only to a function that declares it
    args, kwargs = cast(object, node.args), cast(object, node.kwargs)
    if not isinstance(args, tuple | list) or not isinstance(kwargs, Mapping):
        return  # not a call at all: the node's own constructor types say so
    problem = task.arguments.problem(
        tuple(cast("Sequence[Any]", args)), cast("Mapping[str, Any]", kwargs), later
    )
    if problem is None:
        return
    error = WorkflowValidationError(
        f"the arguments of node {graph.label(index)} do not fit task '{task.task_name}'",
        code=ErrorCode.WORKFLOW_INVALID_NODE_ARGS,
    )
    given = ", ".join(sorted(later)) or "none"
    errors.append(
        error.with_note(problem)
        .with_note(f"parameters: {task.__name__}{task.arguments.signature}")
        .with_note(f"filled by the workflow when it runs: {given}")
        .with_help("make the node's args, kwargs and args_from keys match the task's parameters")
    )


def _source_label(graph: _Graph, source: object) -> str:
    if graph.contains(source):
        return graph.label(graph.index_of[id(source)])
    return graph.foreign(source)


def _declares_workflow_ctx(fn: object) -> bool:
    try:
        parameters = inspect.signature(cast("Any", fn)).parameters
    except (TypeError, ValueError):
        return True  # cannot tell (e.g. a builtin): do not refuse the workflow
    parameter = parameters.get("workflow_ctx")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _check_join(graph: _Graph, index: int, node: AnyNode, errors: list[HorsiesError]) -> None:
    """E013: join mode and min_success."""
    join = cast(object, node.join)
    min_success = cast(object, node.min_success)
    label = graph.label(index)
    if join not in JOIN_TYPES:
        errors.append(
            WorkflowValidationError(
                f"invalid join for node {label}", code=ErrorCode.WORKFLOW_INVALID_JOIN
            )
            .with_note(f"got join={join!r}")
            .with_help('join is "all", "any" or "quorum"')
        )
        return
    if join != "quorum":
        if min_success is not None:
            errors.append(
                WorkflowValidationError(
                    f"min_success set on node {label} whose join is '{join}'",
                    code=ErrorCode.WORKFLOW_INVALID_JOIN,
                )
                .with_note(f"got min_success={min_success!r}")
                .with_help('min_success is only used with join="quorum"; remove it')
            )
        return
    waits_for = cast(object, node.waits_for)
    total = len(cast("Sequence[object]", waits_for)) if isinstance(waits_for, Sequence) else 0
    valid_number = isinstance(min_success, int) and not isinstance(min_success, bool)
    if not valid_number or not 1 <= cast(int, min_success) <= total:
        reason = (
            "quorum join requires min_success"
            if min_success is None
            else f"min_success must be between 1 and the node's {total} dependencies"
        )
        errors.append(
            WorkflowValidationError(
                f"invalid quorum for node {label}", code=ErrorCode.WORKFLOW_INVALID_JOIN
            )
            .with_note(reason)
            .with_note(f"got min_success={min_success!r}")
        )


def _check_retry_mode(
    graph: _Graph, index: int, node: SubWorkflowNode[Any], errors: list[HorsiesError]
) -> None:
    """E017; a retry mode given as its string value is converted to the enum."""
    mode = cast(object, node.retry_mode)
    with contextlib.suppress(ValueError):
        node.retry_mode = SubWorkflowRetryMode(mode)
    if node.retry_mode is SubWorkflowRetryMode.RERUN_FAILED_ONLY:
        return
    errors.append(
        WorkflowValidationError(
            f"unsupported retry_mode for sub-workflow node {graph.label(index)}",
            code=ErrorCode.WORKFLOW_INVALID_SUBWORKFLOW_RETRY_MODE,
        )
        .with_note(f"got retry_mode={mode!r}")
        .with_help("only SubWorkflowRetryMode.RERUN_FAILED_ONLY is supported")
    )


def _find_cycle(dependencies: Sequence[Sequence[int]]) -> list[int] | None:
    """One cycle among the edges (Kahn's algorithm), as node indices where each waits for the
    next and the last repeats the first; None for an acyclic graph."""
    remaining = [len(deps) for deps in dependencies]
    dependents: list[list[int]] = [[] for _ in dependencies]
    for index, deps in enumerate(dependencies):
        for dependency in deps:
            dependents[dependency].append(index)
    ready = deque(index for index, count in enumerate(remaining) if count == 0)
    while ready:
        index = ready.popleft()
        for dependent in dependents[index]:
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                ready.append(dependent)
    stuck = {index for index, count in enumerate(remaining) if count > 0}
    if not stuck:
        return None
    # Every stuck node waits for another stuck node, so walking those edges must loop.
    position: dict[int, int] = {}
    path: list[int] = []
    current = min(stuck)
    while current not in position:
        position[current] = len(path)
        path.append(current)
        current = next(dependency for dependency in dependencies[current] if dependency in stuck)
    return [*path[position[current] :], current]


def _find_definition_cycle(root: str, tasks: Sequence[AnyNode]) -> list[str] | None:
    """Workflow names forming a loop through nested `SubWorkflowNode` definitions, by name."""
    finished: set[str] = set()

    def visit(definition: object, path: list[str]) -> list[str] | None:
        if not isinstance(definition, type):
            return None
        name: object = getattr(definition, "name", None)
        if not isinstance(name, str):
            return None
        if name in path:
            return [*path[path.index(name) :], name]
        if name in finished:
            return None
        for _, node in definition_nodes(definition):
            if isinstance(node, SubWorkflowNode):
                found = visit(node.workflow_def, [*path, name])
                if found is not None:
                    return found
        finished.add(name)
        return None

    for node in tasks:
        if isinstance(node, SubWorkflowNode):
            found = visit(node.workflow_def, [root])
            if found is not None:
                return found
    return None


def _check_output(graph: _Graph, output: object, errors: list[HorsiesError]) -> None:
    """E011."""
    if output is None or graph.contains(output):
        return
    errors.append(
        WorkflowValidationError(
            "workflow output is not one of its tasks", code=ErrorCode.WORKFLOW_INVALID_OUTPUT
        )
        .with_note(f"output: {graph.foreign(output)}")
        .with_help("pass one of the nodes listed in tasks as output")
    )


def _policy_error(message: str) -> WorkflowValidationError:
    return WorkflowValidationError(message, code=ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY)


def _check_success_policy(graph: _Graph, policy: object, errors: list[HorsiesError]) -> None:
    """E012."""
    if policy is None:
        return
    if not isinstance(policy, SuccessPolicy):
        errors.append(
            _policy_error("success_policy must be a SuccessPolicy").with_note(f"got {policy!r}")
        )
        return
    cases = list(policy.cases)
    if not cases:
        errors.append(
            _policy_error("success policy has no cases").with_help(
                "SuccessPolicy(cases=[SuccessCase(required=[node, ...])])"
            )
        )
    for number, case in enumerate(cases):
        if not isinstance(case, SuccessCase):  # pyright: ignore[reportUnnecessaryIsInstance]
            errors.append(
                _policy_error(f"success policy case {number} is not a SuccessCase").with_note(
                    f"got {case!r}"
                )
            )
            continue
        required = list(case.required)
        if not required:
            errors.append(_policy_error(f"success policy case {number} requires no node"))
        for entry in required:
            if not graph.contains(entry):
                errors.append(
                    _policy_error(
                        f"success policy case {number} requires a node that is not in the workflow"
                    ).with_note(f"required: {graph.foreign(entry)}")
                )
    for entry in policy.optional or ():
        if not graph.contains(entry):
            errors.append(
                _policy_error(
                    "success policy lists an optional node that is not in the workflow"
                ).with_note(f"optional: {graph.foreign(entry)}")
            )
