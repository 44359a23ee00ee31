"""A parent workflow whose child is parameterised (``build_with``) with a condition that depends on
the parameter: the engine must evaluate the condition of *that* child, not of another spec built
under the same name."""

from __future__ import annotations

from typing import Any

from horsies import (
    AppConfig,
    Horsies,
    PostgresConfig,
    SubWorkflowNode,
    TaskError,
    TaskNode,
    TaskResult,
    WorkflowContext,
    WorkflowDefinition,
    WorkflowSpec,
)

app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://u:p@localhost:1/unused")))


@app.task("wfchild.step")
def step(label: str) -> TaskResult[str, TaskError]:
    return TaskResult(ok=label)


class Gated(WorkflowDefinition[str]):
    """first -> second; second is skipped when the child was built with mode="skip"."""

    name = "wfchild_gated"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        mode = params.get("mode", "run")
        first = TaskNode(fn=step, args=("first",), node_id="first")

        def skip_when(_ctx: WorkflowContext) -> bool:
            return mode == "skip"

        second = TaskNode(
            fn=step, args=("second",), waits_for=[first], skip_when=skip_when, node_id="second"
        )
        return WorkflowSpec(
            name=cls.name,
            tasks=[first, second],
            output=second,
            workflow_def_module=cls.__module__,
            workflow_def_qualname=cls.__qualname__,
        )


_child = SubWorkflowNode(workflow_def=Gated, kwargs={"mode": "skip"}, node_id="child")


class Parent(WorkflowDefinition[str]):
    name = "wfchild_parent"
    child = _child
