"""A parameterised parent workflow (``build_with`` only, no class-attribute nodes) whose child
definition depends on the parameter: ``Root.build_with(app, child="a")`` runs ``ChildA`` at index
1, ``child="b"`` runs ``ChildB`` there. A worker cannot trust the spec registry for it (keyed by
name, it may hold the other parameterisation); it rebuilds the root from the parameters stored on
the workflow row. ``Gated`` is a parameterised root whose condition depends on its parameter."""

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
    WorkflowDefinition,
    WorkflowSpec,
)

app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://u:p@localhost:1/unused")))


@app.task("wfparam.step")
def step(label: str) -> TaskResult[str, TaskError]:
    return TaskResult(ok=label)


def _one_step(cls: type[WorkflowDefinition[Any]], label: str) -> WorkflowSpec:
    only = TaskNode(fn=step, args=(label,), node_id="only")
    return WorkflowSpec(
        name=cls.name,
        tasks=[only],
        output=only,
        workflow_def_module=cls.__module__,
        workflow_def_qualname=cls.__qualname__,
    )


class ChildA(WorkflowDefinition[str]):
    name = "wfparam_child_a"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        return _one_step(cls, "a")


class ChildB(WorkflowDefinition[str]):
    name = "wfparam_child_b"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        return _one_step(cls, "b")


class Root(WorkflowDefinition[str]):
    """root -> child (ChildA or ChildB, by the ``child`` parameter)."""

    name = "wfparam_root"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        root = TaskNode(fn=step, args=("root",), node_id="root")
        child = SubWorkflowNode(
            workflow_def=ChildA if params["child"] == "a" else ChildB,
            waits_for=[root],
            node_id="child",
        )
        return WorkflowSpec(
            name=cls.name,
            tasks=[root, child],
            output=child,
            workflow_def_module=cls.__module__,
            workflow_def_qualname=cls.__qualname__,
        )


class Gated(WorkflowDefinition[str]):
    """first -> gate, where ``gate`` is skipped when the ``skip`` parameter says so: its condition
    exists only in a spec built with that parameter."""

    name = "wfparam_gated"

    @classmethod
    def build_with(cls, app: Horsies, *args: Any, **params: Any) -> WorkflowSpec:
        skip = bool(params["skip"])
        first = TaskNode(fn=step, args=("first",), node_id="first")
        gate = TaskNode(
            fn=step, args=("gate",), node_id="gate", waits_for=[first], skip_when=lambda _: skip
        )
        return WorkflowSpec(
            name=cls.name,
            tasks=[first, gate],
            workflow_def_module=cls.__module__,
            workflow_def_qualname=cls.__qualname__,
        )
