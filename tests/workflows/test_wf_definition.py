"""Class-based workflow definitions: validation codes through `build`, `Meta` entries given as
attribute names (the documented form cannot see the class body), `on_error` as a string."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from horsies import (
    ErrorCode,
    MultipleValidationErrors,
    OnError,
    SubWorkflowNode,
    SuccessCase,
    SuccessPolicy,
    TaskNode,
    WorkflowDefinition,
    WorkflowSpec,
    WorkflowValidationError,
)
from horsies.workflows.nodes import definition_nodes
from horsies.workflows.registry import registered_spec
from wf_app import Child, NamedMetaPipeline, Parent, Pipeline, add, app, fetch, store


def test_build_the_spec_example() -> None:
    built = Pipeline.build(app)
    assert built.name == "pipeline"
    assert built.tasks == [Pipeline.fetch, Pipeline.store]
    assert [node.node_id for node in built.tasks] == ["fetch", "store"]
    assert [node.index for node in built.tasks] == [0, 1]
    assert built.output is Pipeline.store
    assert built.on_error is OnError.FAIL
    assert built.workflow_def_module == "wf_app"
    assert built.workflow_def_qualname == "Pipeline"
    assert built.broker is app.get_broker()
    assert registered_spec("pipeline") is built
    # Queues come from app.workflow.
    assert (Pipeline.fetch.queue, Pipeline.fetch.priority) == ("default", 100)


def test_build_is_repeatable() -> None:
    first = Pipeline.build(app)
    second = Pipeline.build(app)
    assert first is not second
    assert first.tasks == second.tasks
    assert [node.node_id for node in second.tasks] == ["fetch", "store"]


def test_meta_by_attribute_name_and_string_on_error() -> None:
    built = NamedMetaPipeline.build(app)
    first, second, last = NamedMetaPipeline.first, NamedMetaPipeline.second, NamedMetaPipeline.last
    assert built.output is last
    assert built.on_error is OnError.PAUSE
    # An explicit node_id wins over the attribute name.
    assert [node.node_id for node in built.tasks] == ["first", "explicit-second", "last"]
    policy = built.success_policy
    assert policy is not None
    assert list(policy.cases[0].required) == [first, last]
    assert policy.optional == [second]
    # The class's own Meta is untouched: names stay names.
    meta_policy: Any = NamedMetaPipeline.Meta.success_policy
    assert meta_policy.cases[0].required == ["first", "last"]


def test_meta_is_optional() -> None:
    class NoMeta(WorkflowDefinition[int]):
        name = "no meta"
        only = TaskNode(fn=add)

    built = NoMeta.build(app)
    assert built.output is None
    assert built.on_error is OnError.FAIL
    assert built.success_policy is None
    assert built.workflow_def_qualname == ("test_meta_is_optional.<locals>.NoMeta")


def test_e001_missing_name() -> None:
    class Nameless(WorkflowDefinition[int]):
        only = TaskNode(fn=add)

    with pytest.raises(WorkflowValidationError) as info:
        Nameless.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_NO_NAME
    assert info.value.message == (
        "WorkflowDefinition 'test_e001_missing_name.<locals>.Nameless' must define a 'name' "
        "class attribute"
    )


@pytest.mark.parametrize("name", ["", "  ", 42])
def test_e001_blank_or_non_string_name(name: object) -> None:
    class Bad(WorkflowDefinition[int]):
        only = TaskNode(fn=add)

    Bad.name = name  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(WorkflowValidationError) as info:
        Bad.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_NO_NAME


def test_e002_no_nodes() -> None:
    class Empty(WorkflowDefinition[int]):
        name = "empty"
        not_a_node = 3

    with pytest.raises(WorkflowValidationError) as info:
        Empty.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_NO_NODES
    assert info.value.message.endswith("has no TaskNode attributes")


def test_e001_and_e002_are_collected() -> None:
    class Nothing(WorkflowDefinition[int]):
        pass

    with pytest.raises(MultipleValidationErrors) as info:
        Nothing.build(app)
    assert [error.code for error in info.value.errors] == [
        ErrorCode.WORKFLOW_NO_NAME,
        ErrorCode.WORKFLOW_NO_NODES,
    ]


def test_inherited_nodes_are_not_collected() -> None:
    class Base(WorkflowDefinition[int]):
        name = "base"
        inherited = TaskNode(fn=add)

    class Derived(Base):
        own = TaskNode(fn=add)

    assert [attribute for attribute, _ in definition_nodes(Derived)] == ["own"]
    built = Derived.build(app)
    assert built.name == "base"  # the name itself is inherited
    assert built.tasks == [Derived.own]

    class OnlyInherits(Base):
        pass

    with pytest.raises(WorkflowValidationError) as info:
        OnlyInherits.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_NO_NODES


def test_nodes_keep_definition_order() -> None:
    class Ordered(WorkflowDefinition[int]):
        name = "ordered"
        zeta = TaskNode(fn=add)
        alpha = TaskNode(fn=add, waits_for=[zeta])
        middle = TaskNode(fn=add, waits_for=[alpha])

    assert [node.node_id for node in Ordered.build(app).tasks] == ["zeta", "alpha", "middle"]


def test_e011_meta_output_names_no_node() -> None:
    class BadOutput(WorkflowDefinition[int]):
        name = "bad output"
        only = TaskNode(fn=add)

        class Meta:
            output = "missing"

    with pytest.raises(WorkflowValidationError) as info:
        BadOutput.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_INVALID_OUTPUT
    assert "'missing'" in info.value.notes[0]
    assert "only" in info.value.notes[0]


def test_e011_meta_output_node_outside_the_definition() -> None:
    stray = TaskNode(fn=add)

    class StrayOutput(WorkflowDefinition[int]):
        name = "stray output"
        only = TaskNode(fn=add)

        class Meta:
            output = stray

    with pytest.raises(WorkflowValidationError) as info:
        StrayOutput.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_INVALID_OUTPUT


def test_e012_success_policy_names_no_node() -> None:
    class BadPolicy(WorkflowDefinition[int]):
        name = "bad policy"
        only = TaskNode(fn=add)

        class Meta:
            success_policy = SuccessPolicy(
                cases=[SuccessCase(required=["only", "ghost"])], optional=["phantom"]
            )

    with pytest.raises(MultipleValidationErrors) as info:
        BadPolicy.build(app)
    assert [error.code for error in info.value.errors] == [
        ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY
    ] * 2


def test_definition_errors_are_collected_with_e001() -> None:
    class Broken(WorkflowDefinition[int]):
        only = TaskNode(fn=add)

        class Meta:
            output = "nope"

    with pytest.raises(MultipleValidationErrors) as info:
        Broken.build(app)
    assert [error.code for error in info.value.errors] == [
        ErrorCode.WORKFLOW_NO_NAME,
        ErrorCode.WORKFLOW_INVALID_OUTPUT,
    ]


def test_spec_validation_errors_come_through_build() -> None:
    class Cyclic(WorkflowDefinition[int]):
        name = "cyclic"
        root = TaskNode(fn=add)
        a = TaskNode(fn=add)
        b = TaskNode(fn=add, waits_for=[a])

    Cyclic.a.waits_for = [Cyclic.b]
    with pytest.raises(WorkflowValidationError) as info:
        Cyclic.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_CYCLE_DETECTED
    assert info.value.notes[0] == "'a' -> 'b' -> 'a'"


def test_documented_meta_scoping_raises_name_error() -> None:
    # Names of the class body are invisible inside Meta (plain Python scoping): the reason `Meta`
    # also accepts attribute names as strings.
    with pytest.raises(NameError):

        class Broken(WorkflowDefinition[int]):  # pyright: ignore[reportUnusedClass]
            name = "scoping"
            final_step = TaskNode(fn=add)

            class Meta:
                output = final_step  # pyright: ignore  # noqa: F821


def test_build_with_defaults_to_build() -> None:
    built = Pipeline.build_with(app, "ignored", size=3)
    assert built.name == "pipeline"
    assert built.workflow_def_qualname == "Pipeline"
    assert built.tasks == [Pipeline.fetch, Pipeline.store]


def test_build_with_override_for_parameterised_definitions() -> None:
    class FanOut(WorkflowDefinition[bool]):
        name = "fan out"
        calls: ClassVar[list[tuple[Any, ...]]] = []

        @classmethod
        def build_with(cls, app: Any, *args: Any, **params: Any) -> WorkflowSpec:
            cls.calls.append((args, params))
            fetches = [
                TaskNode(fn=fetch, args=(url,), node_id=f"fetch_{n}")
                for n, url in enumerate(params["urls"])
            ]
            last = TaskNode(fn=store, waits_for=fetches, node_id="store")
            return WorkflowSpec(
                name=cls.name,
                tasks=[*fetches, last],
                output=last,
                workflow_def_module=cls.__module__,
                workflow_def_qualname=cls.__qualname__,
            )

    built = FanOut.build_with(app, urls=["a", "b"])
    assert [node.node_id for node in built.tasks] == ["fetch_0", "fetch_1", "store"]
    assert FanOut.calls == [((), {"urls": ["a", "b"]})]
    assert built.workflow_def_module == __name__
    first = built.tasks[0]
    assert isinstance(first, TaskNode)
    assert first.queue == "default"  # from the task's own options


def test_sub_workflow_nodes_in_a_definition() -> None:
    built = Parent.build(app)
    assert [node.node_id for node in built.tasks] == ["prepare", "child"]
    child = built.tasks[1]
    assert isinstance(child, SubWorkflowNode)
    assert child.workflow_def is Child
    assert child.name == "child"
    assert Child.build(app).tasks == [Child.only]
