"""What a task sees of its workflow: `WorkflowContext`, `WorkflowMeta`, `SubWorkflowSummary`.

A task that declares a ``workflow_ctx`` parameter and whose node lists `workflow_ctx_from`
receives a `WorkflowContext` holding the results (and child-workflow summaries) of those
dependencies. A task that declares ``workflow_meta`` receives a `WorkflowMeta` (None outside a
workflow).

`SubWorkflowError` is the error of a node whose child workflow did not complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from pydantic import BaseModel, PrivateAttr

from horsies.codec import (
    DATACLASS_TAG,
    SerializationError,
    loads_json,
    rehydrate_value,
    task_result_from_json,
    to_jsonable,
)
from horsies.errors import WorkflowContextMissingIdError
from horsies.results import TaskError, TaskResult
from horsies.workflows.status import WorkflowStatus

if TYPE_CHECKING:
    from horsies.workflows.nodes import NodeKey, SubWorkflowNode, TaskNode

__all__ = [
    "SubWorkflowError",
    "SubWorkflowSummary",
    "WorkflowContext",
    "WorkflowContextMissingIdError",
    "WorkflowHandleMissingIdError",
    "WorkflowMeta",
]

T = TypeVar("T")
V = TypeVar("V")


class WorkflowHandleMissingIdError(RuntimeError):
    """A `WorkflowHandle` lookup was given a node whose `node_id` is None."""


@dataclass(frozen=True, slots=True)
class WorkflowMeta:
    """Where a task runs inside a workflow (injected into a ``workflow_meta`` parameter)."""

    workflow_id: str
    task_index: int
    task_name: str


_COUNT_FIELDS = (
    ("total_tasks", "total"),
    ("completed_tasks", "completed"),
    ("failed_tasks", "failed"),
    ("skipped_tasks", "skipped"),
)


def _lenient_status(value: object) -> WorkflowStatus:
    if isinstance(value, WorkflowStatus):
        return value
    if isinstance(value, str):
        try:
            return WorkflowStatus(value.upper())
        except ValueError:
            pass
    return WorkflowStatus.FAILED


def _lenient_count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _listed(entries: Mapping[str, V], node_id: str, missing: str) -> V:
    """``entries[node_id]``; a KeyError saying ``missing`` when the node is not there."""
    if node_id not in entries:
        raise KeyError(missing)
    return entries[node_id]


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _SameAs(Generic[V]):
    """A read-only second name of another attribute."""

    __slots__ = ("_target",)

    def __init__(self, target: str) -> None:
        self._target = target

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _SameAs[V]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> V: ...
    def __get__(self, obj: object, owner: type | None = None) -> V | _SameAs[V]:
        if obj is None:
            return self  # looked up on the class (help(), introspection)
        return cast(V, getattr(obj, self._target))

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"read-only: set {self._target} instead")


@dataclass
class SubWorkflowSummary(Generic[T]):
    """How a child workflow ended, as seen by its parent (`T`: the child's output type).

    Attributes:
        status: the child's final status.
        success_case: the satisfied success case (always None: cases are not recorded).
        output: the child's ok output (None unless the child COMPLETED).
        total_tasks / completed_tasks / failed_tasks / skipped_tasks: node counts in the child.
        error_summary: the message of the child's stored error, if any.

    The short names `total`, `completed`, `failed`, `skipped` and `error` read the same values, for
    code written against either spelling. A status given as a string (``"FAILED"``) is converted
    to `WorkflowStatus`.
    """

    status: WorkflowStatus
    success_case: str | None = None
    output: T | None = None
    total_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    skipped_tasks: int = 0
    error_summary: str | None = None

    def __post_init__(self) -> None:
        # The codec stores the str enum as its plain value; bring it back as the enum.
        if not isinstance(self.status, WorkflowStatus):  # pyright: ignore[reportUnnecessaryIsInstance]
            self.status = WorkflowStatus(str(self.status).upper())

    total = _SameAs[int]("total_tasks")
    completed = _SameAs[int]("completed_tasks")
    failed = _SameAs[int]("failed_tasks")
    skipped = _SameAs[int]("skipped_tasks")
    error = _SameAs["str | None"]("error_summary")

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-able dict; `output` in the codec's tagged form (see `from_json`).

        Raises `horsies.codec.SerializationError` if `output` cannot be encoded.
        """
        return {
            "status": self.status.value,
            "success_case": self.success_case,
            "output": to_jsonable(self.output),
            "total_tasks": self.total_tasks,
            "completed_tasks": self.completed_tasks,
            "failed_tasks": self.failed_tasks,
            "skipped_tasks": self.skipped_tasks,
            "error_summary": self.error_summary,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubWorkflowSummary[Any]:
        """Build a summary from `to_json()` output, never raising.

        Lenient: an unknown status gives FAILED, a missing or bad count gives 0, the short field
        names (`total`, `error`, ...) and the codec's tagged dataclass form are accepted, and an
        `output` that cannot be rebuilt is kept in its stored form.
        """
        payload: Mapping[str, Any] = data if isinstance(data, Mapping) else {}  # pyright: ignore[reportUnnecessaryIsInstance]
        inner = payload.get("data")
        if payload.get(DATACLASS_TAG) is True and isinstance(inner, Mapping):
            payload = cast("Mapping[str, Any]", inner)
        counts = {
            name: _lenient_count(payload.get(name, payload.get(alias)))
            for name, alias in _COUNT_FIELDS
        }
        output: Any = payload.get("output")
        # An output that cannot be rebuilt keeps its stored form rather than lose the summary.
        with contextlib.suppress(SerializationError):
            output = rehydrate_value(output)
        return cls(
            status=_lenient_status(payload.get("status")),
            success_case=_optional_text(payload.get("success_case")),
            output=output,
            error_summary=_optional_text(payload.get("error_summary", payload.get("error"))),
            **counts,
        )


def _node_id_of(node: TaskNode[Any] | SubWorkflowNode[Any] | NodeKey[Any]) -> str | None:
    return node.node_id


class WorkflowContext(BaseModel):
    """Results of the dependencies a node listed in `workflow_ctx_from`, keyed by node id.

    Passed to a task's ``workflow_ctx`` parameter and to `run_when` / `skip_when` conditions.
    Only `workflow_id`, `task_index` and `task_name` are model fields (they are all that
    `model_dump()` shows); results and summaries are read with the methods below.

    A failed dependency's result is its err `TaskResult`; a skipped one is an err result with code
    `UPSTREAM_SKIPPED`.
    """

    workflow_id: str
    task_index: int
    task_name: str

    _results: dict[str, TaskResult[Any, TaskError]] = PrivateAttr(default_factory=dict)
    _summaries: dict[str, SubWorkflowSummary[Any]] = PrivateAttr(default_factory=dict)

    def _required_id(self, node: TaskNode[Any] | SubWorkflowNode[Any] | NodeKey[Any]) -> str:
        node_id = _node_id_of(node)
        if node_id is None:
            raise WorkflowContextMissingIdError(
                f"{type(node).__name__} node_id is not set: the workflow context looks results up "
                "by node id"
            )
        return node_id

    def result_for(
        self, node: TaskNode[T] | SubWorkflowNode[T] | NodeKey[T]
    ) -> TaskResult[T, TaskError]:
        """The result of a dependency listed in `workflow_ctx_from`.

        Raises:
            WorkflowContextMissingIdError: the node's `node_id` is None.
            KeyError: the node is not in this context.
        """
        node_id = self._required_id(node)
        return _listed(
            self._results,
            node_id,
            f"Node '{node_id}' not in workflow context. Ensure the node is included in "
            "workflow_ctx_from.",
        )

    def has_result(self, node: TaskNode[Any] | SubWorkflowNode[Any] | NodeKey[Any]) -> bool:
        """True if the context holds a result for the node (False when its node_id is None)."""
        node_id = _node_id_of(node)
        return node_id is not None and node_id in self._results

    def summary_for(self, node: SubWorkflowNode[T] | NodeKey[T]) -> SubWorkflowSummary[T]:
        """The summary of a finished child workflow listed in `workflow_ctx_from`.

        Raises:
            WorkflowContextMissingIdError: the node's `node_id` is None.
            KeyError: no summary for the node in this context.
        """
        node_id = self._required_id(node)
        return _listed(
            self._summaries,
            node_id,
            f"Sub-workflow summary for '{node_id}' not in workflow context. Ensure the "
            "SubWorkflowNode is included in workflow_ctx_from.",
        )

    def has_summary(self, node: SubWorkflowNode[Any] | NodeKey[Any]) -> bool:
        """True if the context holds a summary for the node (False when its node_id is None)."""
        node_id = _node_id_of(node)
        return node_id is not None and node_id in self._summaries

    @classmethod
    def from_serialized(
        cls,
        workflow_id: str,
        task_index: int,
        task_name: str,
        results_by_id: Mapping[str, Any],
        summaries_by_id: Mapping[str, Any] | None = None,
    ) -> WorkflowContext:
        """Build a context from what the engine stored in the task's kwargs.

        `results_by_id` values are `TaskResult`s (JSON text or a parsed tagged dict is decoded);
        `summaries_by_id` values are `SubWorkflowSummary`s or their `to_json()` dicts (or text).
        """
        context = cls(workflow_id=workflow_id, task_index=task_index, task_name=task_name)
        for node_id, value in results_by_id.items():
            if isinstance(value, TaskResult):
                result = cast("TaskResult[Any, TaskError]", value)
            else:
                result = task_result_from_json(value)
            context._results[node_id] = result
        for node_id, value in (summaries_by_id or {}).items():
            summary: object = loads_json(value) if isinstance(value, str | bytes) else value
            if isinstance(summary, SubWorkflowSummary):
                context._summaries[node_id] = cast("SubWorkflowSummary[Any]", summary)
            elif isinstance(summary, Mapping):
                mapping = cast("Mapping[str, Any]", summary)
                context._summaries[node_id] = SubWorkflowSummary.from_json(mapping)
        return context


class SubWorkflowError(TaskError):
    """The error of a workflow node whose child workflow did not complete.

    `error_code` is `SUBWORKFLOW_FAILED`; `sub_workflow_id` names the child workflow and
    `sub_workflow_summary` says how it ended. It survives storage as a `SubWorkflowError`, so
    ``case SubWorkflowError(sub_workflow_summary=summary):`` works on results read back from the
    database.
    """

    sub_workflow_id: str
    sub_workflow_summary: SubWorkflowSummary[Any] | None = None
