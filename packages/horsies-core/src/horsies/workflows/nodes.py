"""Workflow nodes: what a `WorkflowSpec` is made of.

A `TaskNode` runs one task; a `SubWorkflowNode` runs a whole child workflow built from a
`WorkflowDefinition`. Edges come from `waits_for`. Nodes are plain mutable dataclasses built with
keyword arguments; building a spec writes each node's `index` (and a missing `node_id`) into it.

Node identity is object identity: "is this node in the workflow / in `waits_for`" never uses
equality, so two nodes with identical fields are still two nodes. Nodes are hashable by identity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeAlias, TypeVar

from horsies.errors import WorkflowValidationError
from horsies.workflows.status import SubWorkflowRetryMode

if TYPE_CHECKING:
    from horsies.tasks.function import TaskFunction
    from horsies.workflows.context import WorkflowContext
    from horsies.workflows.definition import WorkflowDefinition

__all__ = [
    "JOIN_TYPES",
    "MAX_NODE_ID_LENGTH",
    "NODE_ID_PATTERN",
    "AnyNode",
    "JoinType",
    "NodeKey",
    "SubWorkflowNode",
    "SuccessCase",
    "SuccessPolicy",
    "TaskNode",
    "definition_nodes",
    "slugify",
]

T = TypeVar("T")

JoinType: TypeAlias = Literal["all", "any", "quorum"]
"""How a node combines its dependencies (see docs/workflows.md, "Join modes")."""

JOIN_TYPES: Final[tuple[JoinType, ...]] = ("all", "any", "quorum")

NODE_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_\-:.]+$")
"""What a node id may contain: ASCII letters, digits, ``_``, ``-``, ``:`` and ``.``."""

MAX_NODE_ID_LENGTH: Final = 128
"""Longest accepted node id."""

_NOT_ID_CHARS: Final = re.compile(r"[^A-Za-z0-9_\-:.]")


def slugify(value: str) -> str:
    """Turn any text into a valid node id fragment.

    Spaces become ``_``, every other character outside ``[A-Za-z0-9_\\-:.]`` is dropped, and an
    empty result becomes ``"_"``: ``slugify("My Data Pipeline") == "My_Data_Pipeline"``,
    ``slugify("Hello World!") == "Hello_World"``, ``slugify("task:v2.0") == "task:v2.0"``.
    """
    return _NOT_ID_CHARS.sub("", value.replace(" ", "_")) or "_"


# No slots: on Python 3.11 a frozen slotted generic dataclass breaks `NodeKey[int]("x")`.
@dataclass(frozen=True)
class NodeKey(Generic[T]):
    """A typed, hashable handle to a node by its id.

    Use it where the node object is not at hand, e.g. `workflow_ctx.result_for(NodeKey("fetch"))`
    or `handle.result_for(node.key())`. `T` is the node's ok type (for type checkers only).
    """

    node_id: str


def _no_nodes() -> list[AnyNode]:
    return []


def _no_sources() -> dict[str, AnyNode]:
    return {}


def _no_kwargs() -> dict[str, Any]:
    return {}


@dataclass(eq=False, kw_only=True, repr=False)
class _Node(Generic[T]):
    """What every kind of node has: its static arguments, its place in the graph, the conditions
    it runs under and its identity. Each kind adds what it runs (see the kinds' docstrings)."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=_no_kwargs)
    waits_for: Sequence[AnyNode] = field(default_factory=_no_nodes)
    args_from: Mapping[str, AnyNode] = field(default_factory=_no_sources)
    workflow_ctx_from: Sequence[AnyNode] | None = None
    allow_failed_deps: bool = False
    run_when: Callable[[WorkflowContext], bool] | None = None
    skip_when: Callable[[WorkflowContext], bool] | None = None
    join: JoinType = "all"
    min_success: int | None = None
    index: int | None = None
    node_id: str | None = None

    def key(self) -> NodeKey[T]:
        """`NodeKey(node_id)`; raises `WorkflowValidationError` while `node_id` is None."""
        if self.node_id is None:
            kind = type(self).__name__
            raise WorkflowValidationError(
                f"{kind} node_id is not set: build the workflow first or give the node an "
                "explicit node_id"
            ).with_help(f"{kind}(..., node_id='my_step') gives the node a stable id")
        return NodeKey(self.node_id)


@dataclass(eq=False, kw_only=True, repr=False)
class TaskNode(_Node[T]):
    """A workflow node that runs one task; `T` is the task's ok type.

    Build it with keyword arguments only, e.g.
    `TaskNode(fn=store, waits_for=[fetch_node], args_from={"raw": fetch_node})`.

    Attributes:
        fn: the task function (what `@app.task` returned).
        args / kwargs: static arguments of the call.
        waits_for: dependencies; the node is evaluated when they are terminal per `join`.
        args_from: inject a dependency's `TaskResult` as keyword argument `<key>`; every source
            must also be in `waits_for`.
        workflow_ctx_from: dependencies whose results go into the `WorkflowContext` passed as the
            function's `workflow_ctx` parameter (which it must declare).
        queue / priority: overrides of the task's queue and of the queue's priority.
        allow_failed_deps: run even when dependencies failed or were skipped (join ``"all"``).
        run_when / skip_when: conditions evaluated with a `WorkflowContext` before the node runs.
        join: ``"all"`` (default), ``"any"`` or ``"quorum"`` (with `min_success`).
        good_until: expiry of this node's task, overriding the decorator's `good_until`.
        index: position in the workflow (written by `WorkflowSpec`).
        node_id: stable id, unique in the workflow; ``"<slugified workflow name>:<index>"`` if
            not given (or the attribute name in a `WorkflowDefinition`).
    """

    fn: TaskFunction[..., T]
    queue: str | None = None
    priority: int | None = None
    good_until: datetime | None = None

    @property
    def name(self) -> str:
        """The task's registered name."""
        return self.fn.task_name

    def __repr__(self) -> str:
        # Short on purpose: the default repr would print every dependency recursively.
        task = getattr(self.fn, "task_name", self.fn)
        return f"TaskNode(node_id={self.node_id!r}, task={task!r}, index={self.index!r})"


@dataclass(eq=False, kw_only=True, repr=False)
class SubWorkflowNode(_Node[T]):
    """A workflow node that runs a whole child workflow; `T` is the child's output type.

    The child spec is `workflow_def.build_with(app, *args, **kwargs)`, built when the node
    becomes ready. The node completes with the child's final result, or fails with a
    `SubWorkflowError` carrying the child's `SubWorkflowSummary`. Dependency fields (`waits_for`,
    `args_from`, `workflow_ctx_from`, `join`, `min_success`, `allow_failed_deps`, `run_when`,
    `skip_when`, `index`, `node_id`) work as on `TaskNode`. Only
    `SubWorkflowRetryMode.RERUN_FAILED_ONLY` is accepted as `retry_mode`.
    """

    workflow_def: type[WorkflowDefinition[T]]
    retry_mode: SubWorkflowRetryMode = SubWorkflowRetryMode.RERUN_FAILED_ONLY

    @property
    def name(self) -> str:
        """The child workflow's name (`workflow_def.name`)."""
        return self.workflow_def.name

    def __repr__(self) -> str:
        definition = getattr(self.workflow_def, "__qualname__", self.workflow_def)
        return (
            f"SubWorkflowNode(node_id={self.node_id!r}, workflow_def={definition!s}, "
            f"index={self.index!r})"
        )


AnyNode: TypeAlias = TaskNode[Any] | SubWorkflowNode[Any]
"""Either kind of node."""


@dataclass
class SuccessCase:
    """One way for a workflow to succeed: every `required` node ends COMPLETED.

    Entries are nodes of the workflow; inside a `WorkflowDefinition` they may also be attribute
    names (``SuccessCase(required=["store"])``), because `class Meta` cannot see the class
    body's names.
    """

    required: Sequence[AnyNode | str]


@dataclass
class SuccessPolicy:
    """Alternative success criteria: the workflow is COMPLETED iff at least one case holds.

    Without a policy a workflow succeeds only when no node failed. `optional` nodes are recorded
    but do not affect the outcome.
    """

    cases: Sequence[SuccessCase]
    optional: Sequence[AnyNode | str] | None = None


def definition_nodes(definition: type[Any]) -> list[tuple[str, AnyNode]]:
    """`(attribute name, node)` for every node in the class's own namespace, in definition order.

    Inherited attributes are not included: each definition lists its own nodes.
    """
    return [
        (attribute, value)
        for attribute, value in vars(definition).items()
        if isinstance(value, TaskNode | SubWorkflowNode)
    ]
