"""`WorkflowSpec`: a validated workflow ready to start.

Building a spec (directly, through `app.workflow(...)` or `WorkflowDefinition.build(app)`)
numbers its nodes, gives every node an id and validates it in two gates: the name (E001, a
non-blank string) and each node with its id (`node_validation`), whose errors stop the build, then
the graph (`graph_validation`), whose errors are all reported together. Several errors of one gate
are raised together as `MultipleValidationErrors`. A valid spec is registered under its name (the
last one built wins), so the process advancing the workflow can find its node objects (conditions,
child definitions) with `registry.registered_spec(name)`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from horsies.config import QueueMode
from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    WorkflowValidationError,
    raise_collected,
)
from horsies.tasks.function import TaskFunction
from horsies.workflows import start as workflow_start
from horsies.workflows.graph_validation import check_graph
from horsies.workflows.node_validation import check_node_ids, coerce_on_error
from horsies.workflows.nodes import AnyNode, SubWorkflowNode, SuccessPolicy, TaskNode
from horsies.workflows.registry import register_spec
from horsies.workflows.status import OnError

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker.caller_connection import CallerConnection
    from horsies.broker.postgres import PostgresBroker
    from horsies.workflows.handle import WorkflowHandle

__all__ = ["WorkflowSpec", "bind_app", "check_node_queues"]

DEFAULT_QUEUE: Final = "default"
DEFAULT_PRIORITY: Final = 100


class _SpecBroker:
    """`WorkflowSpec.broker`: the broker given, else the app's broker, created on first access.

    A spec built by `app.workflow(...)` or `WorkflowDefinition.build(app)` records its app and asks
    it for the broker only when something needs it (`start()`, reading ``spec.broker``): building
    specs at import time then does not load the database driver, which matters in worker children
    that import the app only to run its task functions. The app's broker is asked for each time,
    not kept: the app already keeps it, and a test may point the app at another database
    (``horsies.testing.use_database``) after a spec built at import time has started once.
    """

    def __get__(self, spec: WorkflowSpec | None, owner: object = None) -> PostgresBroker | None:
        if spec is None:
            return None  # the field's default
        broker = spec.__dict__.get("_broker")
        app = spec._app  # pyright: ignore[reportPrivateUsage]
        if broker is None and app is not None:
            return app.get_broker()
        return cast("PostgresBroker | None", broker)

    def __set__(self, spec: WorkflowSpec, value: PostgresBroker | None) -> None:
        spec.__dict__["_broker"] = value


@dataclass(eq=False, repr=False)
class WorkflowSpec:
    """A validated workflow graph; `start()` runs it.

    Prefer `app.workflow(...)` or `WorkflowDefinition.build(app)`, which check each node's queue
    against the app's configuration and attach the app's broker. Building a `WorkflowSpec(...)`
    directly also works: a node's queue defaults to its task's queue (or
    ``"default"``) and its priority to that queue's priority (100 when unknown); pass
    ``broker=app.get_broker()`` to be able to start it.

    Attributes:
        name: the workflow's name (any text; also the registry key).
        tasks: the nodes; list order defines each node's `index`.
        on_error: `OnError.FAIL` (default) or `OnError.PAUSE`; the strings ``"fail"`` /
            ``"pause"`` are accepted.
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
    build_params: tuple[tuple[Any, ...], dict[str, Any]] | None = field(default=None, init=False)
    """The parameters `WorkflowDefinition.build_with` was called with (None for a spec built
    without): a root workflow stores them, so any worker can build it again."""
    _app: Horsies | None = field(default=None, init=False, repr=False)
    """The app whose broker `broker` returns when none was given (`bind_app`)."""
    _within: CallerConnection | None = field(default=None, init=False, repr=False)
    """The caller's connection a start goes through (`within`), or None for the pool."""

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        on_error, on_error_error = coerce_on_error(self.on_error)
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
        node_ids, id_errors = check_node_ids(self.name, self.tasks)
        # The graph checks name nodes by these ids, so they must be valid first.
        raise_collected(id_errors, phase)
        errors = check_graph(self.name, self.tasks, self.output, self.success_policy, node_ids)
        if on_error_error is not None:
            errors.insert(0, on_error_error)
        raise_collected(errors, phase)
        # Ids are written only into the nodes of a valid spec: a failed build leaves them as
        # they were, so fixing the problem and building again gives the same ids.
        for node, node_id in zip(self.tasks, node_ids, strict=True):
            if node.node_id is None:
                node.node_id = node_id
        _resolve_task_queues(self.tasks)
        register_spec(self)

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
        """A copy of this spec with another failure policy (same nodes, same broker)."""
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

    def within(self, connection: object) -> WorkflowSpec:
        """This spec, started through ``connection`` inside its open transaction: the workflow,
        its nodes and its first tasks exist only if that transaction commits (the same
        connections as `TaskFunction.within`; see docs/transactions.md). Root conditions
        (`run_when`/`skip_when`) are decided in that transaction too.

        Raises:
            ConfigurationError: E211 for an object horsies cannot write through.
        """
        # Here, not at the top: importing specs must not load the database driver (see
        # _SpecBroker).
        from horsies.broker.caller_connection import CallerConnection

        view = copy.copy(self)
        view._within = CallerConnection(connection)
        return view

    def start(self, workflow_id: str | None = None) -> WorkflowHandle:
        """Start the workflow and return its handle (same as `start_workflow(spec, broker)`).

        With a `workflow_id` of an existing workflow, returns a handle to it and changes nothing.
        Use `start_async` inside async code.

        Raises:
            RuntimeError: the spec has no broker.
        """
        broker = self._require_broker()
        return workflow_start.start_workflow(self, broker, workflow_id, within=self._within)

    async def start_async(self, workflow_id: str | None = None) -> WorkflowHandle:
        """Async twin of `start`."""
        broker = self._require_broker()
        return await workflow_start.start_workflow_async(
            self, broker, workflow_id, within=self._within
        )


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


def check_node_queues(app: Horsies, name: str, tasks: Sequence[AnyNode]) -> None:
    """What `Horsies.workflow(...)` checks before building the spec: the nodes' queues.

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


def bind_app(spec: WorkflowSpec, app: Horsies) -> WorkflowSpec:
    """Give ``spec`` the app whose broker it starts on, created when first needed (see
    `_SpecBroker`): building a spec at import time loads no database driver."""
    spec._app = app  # pyright: ignore[reportPrivateUsage]
    return spec


def _resolve_task_queues(tasks: Sequence[AnyNode]) -> None:
    """Fill in each TaskNode's missing queue and priority from its task, for specs built without
    an app to check them against."""
    for node in tasks:
        if not isinstance(node, TaskNode):
            continue
        fn = node.fn
        if node.queue is None:
            node.queue = fn.task_queue_name or DEFAULT_QUEUE
        if node.priority is None:
            node.priority = _queue_priority(fn.app, node.queue)
