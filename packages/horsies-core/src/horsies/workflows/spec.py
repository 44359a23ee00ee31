"""`WorkflowSpec`: a validated workflow ready to start, and the per-process spec registry.

Building a spec (directly, through `app.workflow(...)` or `WorkflowDefinition.build(app)`)
numbers its nodes, gives every node an id and validates the graph in two gates (spec 03 §3.1,
decision D20):

1. the name (E001, a non-blank string) and the node ids: each node is a node, ids are non-empty,
   at most 128 characters, match ``^[A-Za-z0-9_\\-:.]+$`` and are unique (E003, E004). Errors
   here stop the validation.
2. everything else, all reported together: roots (E005), dependencies (E006), cycles (E007, also
   between nested definitions), `args_from` (E008), `workflow_ctx_from` (E009, E010), `output`
   (E011), `success_policy` (E012), `join` / `min_success` (E013), sub-workflow retry mode (E017).

Several errors of one gate are raised together as `MultipleValidationErrors`. A valid spec is
registered under its name (the last one built wins), so the process advancing the workflow can
find its node objects (conditions, child definitions) with `registered_spec(name)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from horsies.config import QueueMode
from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    SourceLocation,
    WorkflowValidationError,
    raise_collected,
)
from horsies.tasks.decorator import TaskFunction
from horsies.workflows.definition import WorkflowDefinition, definition_nodes
from horsies.workflows.nodes import (
    JOIN_TYPES,
    MAX_NODE_ID_LENGTH,
    NODE_ID_PATTERN,
    AnyNode,
    SubWorkflowNode,
    SuccessCase,
    SuccessPolicy,
    TaskNode,
    slugify,
)
from horsies.workflows.status import OnError, SubWorkflowRetryMode

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker.postgres import PostgresBroker
    from horsies.workflows.handle import WorkflowHandle

__all__ = ["WorkflowSpec", "build_workflow_spec", "registered_spec"]

DEFAULT_QUEUE: Final = "default"
DEFAULT_PRIORITY: Final = 100

_registry: dict[str, WorkflowSpec] = {}
_registry_lock = threading.Lock()


def registered_spec(name: str) -> WorkflowSpec | None:
    """The last valid spec built in this process under `name`, or None."""
    with _registry_lock:
        return _registry.get(name)


def _register(spec: WorkflowSpec) -> None:
    with _registry_lock:
        _registry[spec.name] = spec


class _SpecBroker:
    """`WorkflowSpec.broker`: the broker given, else the app's broker, created on first access.

    A spec built by `app.workflow(...)` or `WorkflowDefinition.build(app)` records its app and asks
    it for the broker only when something needs it (`start()`, reading ``spec.broker``): building
    specs at import time then does not load the database driver, which matters in worker children
    that import the app only to run its task functions.
    """

    def __get__(self, spec: WorkflowSpec | None, owner: object = None) -> PostgresBroker | None:
        if spec is None:
            return None  # the field's default
        broker = spec.__dict__.get("_broker")
        app = spec._app  # pyright: ignore[reportPrivateUsage]
        if broker is None and app is not None:
            broker = app.get_broker()
            spec.__dict__["_broker"] = broker
        return cast("PostgresBroker | None", broker)

    def __set__(self, spec: WorkflowSpec, value: PostgresBroker | None) -> None:
        spec.__dict__["_broker"] = value


@dataclass(eq=False, repr=False)
class WorkflowSpec:
    """A validated workflow graph; `start()` runs it.

    Prefer `app.workflow(...)` or `WorkflowDefinition.build(app)`, which check each node's queue
    against the app's configuration and attach the app's broker. Building a `WorkflowSpec(...)`
    directly also works (decision D22): a node's queue defaults to its task's queue (or
    ``"default"``) and its priority to that queue's priority (100 when unknown); pass
    ``broker=app.get_broker()`` to be able to start it.

    Attributes:
        name: the workflow's name (any text; also the registry key).
        tasks: the nodes; list order defines each node's `index`.
        on_error: `OnError.FAIL` (default) or `OnError.PAUSE`; the strings ``"fail"`` /
            ``"pause"`` are accepted (decision D23).
        output: the node whose result is the workflow's result; without one the result maps
            each sink node's id to its result.
        success_policy: alternative success criteria (see `SuccessPolicy`).
        workflow_def_module / workflow_def_qualname: the `WorkflowDefinition` class this spec
            was built from, if any.
        broker: where `start()` writes the workflow; for a spec built from an app without one,
            that app's broker, created on first access.

    Raises:
        WorkflowValidationError: construction-time validation failed (see the module docstring);
            several problems come as `MultipleValidationErrors`.
    """

    name: str
    tasks: list[AnyNode]
    on_error: OnError = OnError.FAIL
    output: AnyNode | None = None
    success_policy: SuccessPolicy | None = None
    workflow_def_module: str | None = None
    workflow_def_qualname: str | None = None
    broker: _SpecBroker = _SpecBroker()
    _app: Horsies | None = field(default=None, init=False, repr=False)
    """The app whose broker `broker` returns when none was given (`build_workflow_spec`)."""

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        on_error, on_error_error = _coerce_on_error(self.on_error)
        self.on_error = on_error
        for index, node in enumerate(self.tasks):
            if isinstance(node, TaskNode | SubWorkflowNode):  # pyright: ignore[reportUnnecessaryIsInstance]
                node.index = index
        phase = f"workflow '{self.name}'"
        name = cast(object, self.name)
        if not isinstance(name, str) or not name.strip():
            raise WorkflowValidationError(
                "workflow has no name", code=ErrorCode.WORKFLOW_NO_NAME
            ).with_note(f"got name={name!r}")
        node_ids, id_errors = _check_node_ids(self.name, self.tasks)
        raise_collected(id_errors, phase)  # gate 1 failures stop here
        errors = _check_graph(self, node_ids)
        if on_error_error is not None:
            errors.insert(0, on_error_error)
        raise_collected(errors, phase)
        # Ids are written only into the nodes of a valid spec: a failed build leaves them as
        # they were, so fixing the problem and building again gives the same ids.
        for node, node_id in zip(self.tasks, node_ids, strict=True):
            if node.node_id is None:
                node.node_id = node_id
        _resolve_task_queues(self.tasks)
        _register(self)

    def __repr__(self) -> str:
        return (
            f"WorkflowSpec(name={self.name!r}, tasks={len(self.tasks)}, "
            f"on_error={self.on_error.value!r})"
        )

    @property
    def output_index(self) -> int | None:
        """Index of the `output` node, or None without one."""
        return None if self.output is None else self.output.index

    def with_on_error(self, on_error: OnError | str) -> WorkflowSpec:
        """A copy of this spec with another failure policy (same nodes, same broker; D19)."""
        copy = dataclasses.replace(
            self,
            on_error=cast(OnError, on_error),
            # Not `self.broker`: that would create the app's broker now.
            broker=cast("PostgresBroker | None", self.__dict__.get("_broker")),
        )
        copy._app = self._app
        return copy

    def _require_broker(self) -> PostgresBroker:
        if self.broker is None:
            raise RuntimeError(
                "WorkflowSpec requires a broker to start: build it with app.workflow(...) or "
                "WorkflowDefinition.build(app), or pass broker=app.get_broker()"
            )
        return self.broker

    def start(self, workflow_id: str | None = None) -> WorkflowHandle:
        """Start the workflow and return its handle (same as `start_workflow(spec, broker)`).

        With a `workflow_id` of an existing workflow, returns a handle to it and changes nothing.
        Use `start_async` inside async code.

        Raises:
            RuntimeError: the spec has no broker.
        """
        broker = self._require_broker()
        from horsies.workflows.start import start_workflow

        return start_workflow(self, broker, workflow_id)

    async def start_async(self, workflow_id: str | None = None) -> WorkflowHandle:
        """Async twin of `start`."""
        broker = self._require_broker()
        from horsies.workflows.start import start_workflow_async

        return await start_workflow_async(self, broker, workflow_id)


# -- app.workflow ----------------------------------------------------------------------------------


def _queue_priority(app: Horsies, queue: str) -> int:
    config = app.config
    if config.queue_mode is QueueMode.CUSTOM:
        for custom in config.custom_queues or ():
            if custom.name == queue:
                return custom.priority
    return DEFAULT_PRIORITY


def _node_label(node: AnyNode, index: int) -> str:
    if node.node_id is not None:
        return f"node '{node.node_id}'"
    return f"tasks[{index}] ({node.name})"


def build_workflow_spec(
    app: Horsies,
    name: str,
    tasks: Sequence[AnyNode],
    *,
    on_error: OnError | str = OnError.FAIL,
    output: AnyNode | None = None,
    success_policy: SuccessPolicy | None = None,
    workflow_def_module: str | None = None,
    workflow_def_qualname: str | None = None,
) -> WorkflowSpec:
    """What `Horsies.workflow(...)` does (spec 03 §4): check queues, then build the spec.

    Each `TaskNode`'s queue (its own, else its task's, else ``"default"``) must be a configured
    queue in CUSTOM mode (E103) and ``"default"`` in DEFAULT mode (E200); all such problems are
    raised together. Valid nodes get that queue, and the queue's priority when they set none.
    """
    errors: list[HorsiesError] = []
    valid_queues = app.get_valid_queue_names()
    custom_mode = app.config.queue_mode is QueueMode.CUSTOM
    for index, node in enumerate(tasks):
        if not isinstance(node, TaskNode) or not isinstance(node.fn, TaskFunction):  # pyright: ignore[reportUnnecessaryIsInstance]
            continue  # the spec's own validation reports what is wrong
        queue = node.queue or node.fn.task_queue_name or DEFAULT_QUEUE
        if custom_mode and queue not in valid_queues:
            errors.append(
                ConfigurationError(
                    "TaskNode queue not in app config", code=ErrorCode.TASK_INVALID_QUEUE
                )
                .with_note(f"{_node_label(node, index)} uses queue '{queue}'")
                .with_note(f"valid queues: {', '.join(valid_queues)}")
            )
            continue
        if not custom_mode and queue != DEFAULT_QUEUE:
            errors.append(
                ConfigurationError(
                    "TaskNode has non-default queue in DEFAULT mode",
                    code=ErrorCode.CONFIG_INVALID_QUEUE_MODE,
                )
                .with_note(f"{_node_label(node, index)} uses queue '{queue}'")
                .with_help("remove the node's queue, or configure the app with QueueMode.CUSTOM")
            )
            continue
        node.queue = queue
        if node.priority is None:
            node.priority = _queue_priority(app, queue)
    raise_collected(errors, f"workflow '{name}'")
    spec = WorkflowSpec(
        name=name,
        tasks=list(tasks),
        on_error=cast(OnError, on_error),
        output=output,
        success_policy=success_policy,
        workflow_def_module=workflow_def_module,
        workflow_def_qualname=workflow_def_qualname,
    )
    # The broker is created when first needed (see _SpecBroker).
    spec._app = app  # pyright: ignore[reportPrivateUsage]
    return spec


def _resolve_task_queues(tasks: Sequence[AnyNode]) -> None:
    """Fill in each TaskNode's missing queue and priority from its task (decision D22)."""
    for node in tasks:
        if not isinstance(node, TaskNode):
            continue
        fn = node.fn
        if node.queue is None:
            node.queue = fn.task_queue_name or DEFAULT_QUEUE
        if node.priority is None:
            node.priority = _queue_priority(fn.app, node.queue)


# -- gate 1: nodes and node ids --------------------------------------------------------------------


def _coerce_on_error(value: object) -> tuple[OnError, HorsiesError | None]:
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


def _check_node_ids(name: str, tasks: Sequence[object]) -> tuple[list[str], list[HorsiesError]]:
    """Gate 1: the id each node has or will get (by index), and what is wrong with them."""
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


# -- gate 2: the graph -----------------------------------------------------------------------------


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


def _check_graph(spec: WorkflowSpec, node_ids: Sequence[str]) -> list[HorsiesError]:
    """Gate 2: every other rule, all errors collected."""
    graph = _Graph(spec.tasks, node_ids)
    errors: list[HorsiesError] = []
    if not any(not node.waits_for for node in spec.tasks):
        error = WorkflowValidationError(
            "workflow has no root tasks", code=ErrorCode.WORKFLOW_NO_ROOT_TASKS
        )
        if not spec.tasks:
            error = error.with_note("tasks is empty")
        else:
            error = error.with_note("every node waits for another node")
        errors.append(error.with_help("at least one node must have an empty waits_for"))
    dependencies: list[list[int]] = []
    for index, node in enumerate(spec.tasks):
        dependencies.append(_check_dependencies(graph, index, node, errors))
        _check_sources(graph, index, node, errors)
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
    definition_cycle = _find_definition_cycle(spec.name, spec.tasks)
    if definition_cycle is not None:
        errors.append(
            WorkflowValidationError(
                "sub-workflow definitions contain each other",
                code=ErrorCode.WORKFLOW_CYCLE_DETECTED,
            )
            .with_note(" -> ".join(f"'{name}'" for name in definition_cycle))
            .with_note("each workflow runs the next one as a sub-workflow")
            .with_help("a workflow cannot contain itself, directly or through its children")
        )
    _check_output(graph, spec.output, errors)
    _check_success_policy(graph, spec.success_policy, errors)
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
