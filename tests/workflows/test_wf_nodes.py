"""Workflow nodes, node keys, success policies and `slugify`."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from horsies import (
    AnyNode,
    NodeKey,
    SubWorkflowNode,
    SubWorkflowRetryMode,
    SuccessCase,
    SuccessPolicy,
    TaskNode,
    WorkflowValidationError,
    slugify,
)
from horsies.workflows.nodes import MAX_NODE_ID_LENGTH, NODE_ID_PATTERN
from wf_app import Child, add, fetch

# -- slugify ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("My Data Pipeline", "My_Data_Pipeline"),
        ("Hello World!", "Hello_World"),
        ("task:v2.0", "task:v2.0"),
        ("order-processing_v1", "order-processing_v1"),
        ("", "_"),
        ("!!!", "_"),
        ("café crème", "caf_crme"),
        ("a/b\\c", "abc"),
    ],
)
def test_slugify(value: str, expected: str) -> None:
    assert slugify(value) == expected


def test_slugify_output_is_always_a_valid_node_id_fragment() -> None:
    for value in ["x y", "¿qué?", "\t\n", "a" * 10, "émoji 🐎 horse"]:
        assert NODE_ID_PATTERN.match(slugify(value))


def test_node_id_limits() -> None:
    assert MAX_NODE_ID_LENGTH == 128
    assert NODE_ID_PATTERN.match("A-z_0:9.x")
    assert not NODE_ID_PATTERN.match("with space")
    assert not NODE_ID_PATTERN.match("")


# -- TaskNode --------------------------------------------------------------------------------------


def test_task_node_defaults() -> None:
    node = TaskNode(fn=add)
    assert node.args == ()
    assert node.kwargs == {}
    assert list(node.waits_for) == []
    assert dict(node.args_from) == {}
    assert node.workflow_ctx_from is None
    assert node.queue is None
    assert node.priority is None
    assert node.allow_failed_deps is False
    assert node.run_when is None
    assert node.skip_when is None
    assert node.join == "all"
    assert node.min_success is None
    assert node.good_until is None
    assert node.index is None
    assert node.node_id is None


def test_task_node_mutable_defaults_are_not_shared() -> None:
    first, second = TaskNode(fn=add), TaskNode(fn=add)
    first.kwargs["a"] = 1
    assert second.kwargs == {}
    assert first.waits_for is not second.waits_for
    assert first.args_from is not second.args_from


def test_task_node_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        TaskNode(add)  # type: ignore[misc]  # pyright: ignore[reportCallIssue]


def test_task_node_name_is_the_task_name() -> None:
    assert TaskNode(fn=fetch).name == "wf.fetch"


def test_node_identity_semantics() -> None:
    first = TaskNode(fn=add, kwargs={"a": 1})
    twin = TaskNode(fn=add, kwargs={"a": 1})
    assert first != twin  # same fields, different nodes
    assert first == first
    assert len({first, twin, first}) == 2  # hashable by identity
    assert twin not in [first]


def test_task_node_key() -> None:
    node = TaskNode(fn=add, node_id="sum")
    key = node.key()
    assert key == NodeKey("sum")
    assert key.node_id == "sum"


def test_task_node_key_without_id_raises() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        TaskNode(fn=add).key()
    assert info.value.code is None
    assert info.value.message.startswith("TaskNode node_id is not set")


def test_task_node_repr_is_short() -> None:
    root = TaskNode(fn=add, node_id="root")
    chain: AnyNode = root
    for _ in range(40):  # a recursive repr would explode on a long chain
        chain = TaskNode(fn=add, waits_for=[chain])
    assert repr(root) == "TaskNode(node_id='root', task='wf.add', index=None)"
    assert len(repr(chain)) < 100


# -- SubWorkflowNode -------------------------------------------------------------------------------


def test_sub_workflow_node_defaults_and_name() -> None:
    node = SubWorkflowNode(workflow_def=Child)
    assert node.name == "child"
    assert node.retry_mode is SubWorkflowRetryMode.RERUN_FAILED_ONLY
    assert node.args == ()
    assert node.kwargs == {}
    assert node.join == "all"
    field_names = {field.name for field in dataclasses.fields(SubWorkflowNode)}
    assert not field_names & {"queue", "priority", "good_until", "fn"}


def test_sub_workflow_node_key() -> None:
    assert SubWorkflowNode(workflow_def=Child, node_id="kid").key() == NodeKey("kid")
    with pytest.raises(WorkflowValidationError) as info:
        SubWorkflowNode(workflow_def=Child).key()
    assert info.value.message.startswith("SubWorkflowNode node_id is not set")
    assert "SubWorkflowNode" in repr(SubWorkflowNode(workflow_def=Child))


# -- NodeKey ---------------------------------------------------------------------------------------


def test_node_key_is_frozen_and_hashable() -> None:
    key: NodeKey[int] = NodeKey("a")
    assert {key, NodeKey("a")} == {NodeKey("a")}
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.node_id = "b"  # type: ignore[misc]  # pyright: ignore[reportAttributeAccessIssue]


def test_any_node_alias_covers_both_kinds() -> None:
    nodes: list[AnyNode] = [TaskNode(fn=add), SubWorkflowNode(workflow_def=Child)]
    assert len(nodes) == 2
    text = str(AnyNode)
    assert "TaskNode" in text
    assert "SubWorkflowNode" in text


# -- SuccessPolicy / SuccessCase -------------------------------------------------------------------


def test_success_policy_construction() -> None:
    a, b = TaskNode(fn=add), TaskNode(fn=add)
    case = SuccessCase(required=[a])
    policy = SuccessPolicy(cases=[case], optional=[b])
    assert policy.cases[0].required[0] is a
    assert policy.optional is not None
    assert policy.optional[0] is b
    assert SuccessPolicy([case]).optional is None
    # Nodes named by attribute name (a string) are representable too (resolved by
    # WorkflowDefinition.build).
    named: Any = SuccessCase(required=["a"])
    assert named.required == ["a"]


# -- public API ------------------------------------------------------------------------------------

WORKFLOW_EXPORTS = [
    "AnyNode", "NodeKey", "OnError", "SubWorkflowError", "SubWorkflowNode", "SubWorkflowRetryMode",
    "SubWorkflowSummary", "SuccessCase", "SuccessPolicy", "TaskNode",
    "WORKFLOW_TASK_TERMINAL_STATES", "WORKFLOW_TERMINAL_STATES", "WorkflowContext",
    "WorkflowContextMissingIdError",
    "WorkflowDefinition", "WorkflowHandle", "WorkflowHandleMissingIdError", "WorkflowMeta",
    "WorkflowSpec", "WorkflowStatus", "WorkflowTaskInfo", "WorkflowTaskStatus",
    "WorkflowValidationError", "slugify", "start_workflow", "start_workflow_async",
]  # fmt: skip


def test_workflow_names_are_exported_from_horsies() -> None:
    import horsies

    missing = [name for name in WORKFLOW_EXPORTS if name not in horsies.__all__]
    assert missing == []
    for name in WORKFLOW_EXPORTS:
        assert getattr(horsies, name) is not None
    assert horsies.__all__ == sorted(
        horsies.__all__, key=lambda name: (not name.isupper(), not name[0].isupper(), name)
    )
