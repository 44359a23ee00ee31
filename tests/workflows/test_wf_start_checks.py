"""What `start_workflow` refuses before it writes anything: nodes whose queue or priority was
cleared after the spec was built (a spec resolves both when it is built)."""

from __future__ import annotations

import pytest
import wf_app as wa
from horsies import ErrorCode, MultipleValidationErrors, TaskNode, WorkflowSpec, start_workflow
from horsies.codec import PayloadTooLargeError


def test_a_node_without_queue_and_priority_is_refused_with_both_errors() -> None:
    node = TaskNode(fn=wa.add, args=(1, 2))
    spec = WorkflowSpec(name="cleared", tasks=[node], broker=wa.app.get_broker())
    node.queue = None
    node.priority = None

    with pytest.raises(MultipleValidationErrors) as raised:
        start_workflow(spec, wa.app.get_broker())

    assert [error.code for error in raised.value.errors] == [
        ErrorCode.WORKFLOW_UNRESOLVED_QUEUE,
        ErrorCode.WORKFLOW_UNRESOLVED_PRIORITY,
    ]
    assert "give the node queue=..." in str(raised.value.errors[0])
    assert "give the node priority=..." in str(raised.value.errors[1])


def test_node_arguments_above_max_payload_bytes_are_refused_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limit every send applies holds for a workflow's node arguments too."""
    monkeypatch.setattr(
        wa.app, "config", wa.app.config.model_copy(update={"max_payload_bytes": 1024})
    )
    spec = WorkflowSpec(
        name="too-big",
        tasks=[TaskNode(fn=wa.add, args=("x" * 2000, 1))],
        broker=wa.app.get_broker(),
    )
    with pytest.raises(PayloadTooLargeError) as raised:
        start_workflow(spec, wa.app.get_broker())
    assert "arguments of node" in str(raised.value)
    assert "above the limit of 1,024 bytes" in str(raised.value)
