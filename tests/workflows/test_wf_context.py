"""`WorkflowContext`, `WorkflowMeta`, `SubWorkflowSummary` and `SubWorkflowError` : what a task
reads about its workflow, the summary of a child workflow under both sets of field names, and
the error of a failed child, which round-trips through storage."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import orjson
import pytest
from horsies import (
    LibraryErrorCode,
    NodeKey,
    SubWorkflowError,
    SubWorkflowNode,
    SubWorkflowSummary,
    TaskError,
    TaskNode,
    TaskResult,
    WorkflowContext,
    WorkflowContextMissingIdError,
    WorkflowHandleMissingIdError,
    WorkflowMeta,
    WorkflowStatus,
)
from horsies.codec import (
    dumps_json,
    kwargs_from_json,
    loads_json,
    task_result_from_json,
    task_result_to_json,
)
from wf_app import Child, Report, add

OK: TaskResult[int, TaskError] = TaskResult(ok=5)
FAILED: TaskResult[int, TaskError] = TaskResult(err=TaskError(error_code="BOOM", message="no"))


def summary(**fields: Any) -> SubWorkflowSummary[Any]:
    values: dict[str, Any] = {
        "status": WorkflowStatus.COMPLETED,
        "output": Report(title="t", rows=3),
        "total_tasks": 4,
        "completed_tasks": 2,
        "failed_tasks": 1,
        "skipped_tasks": 1,
        "error_summary": "one failed",
    }
    values.update(fields)
    return SubWorkflowSummary(**values)


def context(**summaries: Any) -> WorkflowContext:
    return WorkflowContext.from_serialized(
        "wf-1", 3, "wf.add", {"a": OK, "b": FAILED}, summaries or None
    )


# -- WorkflowContext -------------------------------------------------------------------------------


def test_public_fields_only_in_model_dump() -> None:
    ctx = context(kid=summary())
    assert ctx.model_dump() == {"workflow_id": "wf-1", "task_index": 3, "task_name": "wf.add"}
    assert (ctx.workflow_id, ctx.task_index, ctx.task_name) == ("wf-1", 3, "wf.add")


def test_result_for_by_node_and_by_key() -> None:
    ctx = context()
    node = TaskNode(fn=add, node_id="a")
    assert ctx.result_for(node) == OK
    assert ctx.result_for(NodeKey("b")) == FAILED
    assert ctx.result_for(SubWorkflowNode(workflow_def=Child, node_id="a")) == OK
    assert ctx.has_result(node)
    assert ctx.has_result(NodeKey("b"))
    assert not ctx.has_result(NodeKey("c"))


def test_result_for_absent_node_raises_key_error() -> None:
    with pytest.raises(KeyError) as info:
        context().result_for(NodeKey("missing"))
    assert "Node 'missing' not in workflow context" in str(info.value)
    assert "workflow_ctx_from" in str(info.value)


def test_missing_node_id_raises_and_has_checks_are_false() -> None:
    ctx = context(kid=summary())
    node = TaskNode(fn=add)
    with pytest.raises(WorkflowContextMissingIdError) as info:
        ctx.result_for(node)
    assert isinstance(info.value, RuntimeError)
    assert not ctx.has_result(node)
    sub = SubWorkflowNode(workflow_def=Child)
    with pytest.raises(WorkflowContextMissingIdError):
        ctx.summary_for(sub)
    assert not ctx.has_summary(sub)


def test_summary_for_returns_the_stored_summary() -> None:
    stored = summary()
    ctx = context(kid=stored)
    node = SubWorkflowNode(workflow_def=Child, node_id="kid")
    assert ctx.has_summary(node)
    assert ctx.has_summary(NodeKey("kid"))
    got = ctx.summary_for(node)
    assert got is stored
    assert got.output == Report(title="t", rows=3)
    assert not ctx.has_summary(NodeKey("a"))
    with pytest.raises(KeyError, match="workflow_ctx_from"):
        ctx.summary_for(NodeKey("a"))


def test_from_serialized_accepts_stored_forms() -> None:
    stored = summary()
    ctx = WorkflowContext.from_serialized(
        "wf-2",
        0,
        "t",
        {"text": task_result_to_json(OK), "parsed": loads_json(task_result_to_json(FAILED))},
        {"dict": stored.to_json(), "text": orjson.dumps(stored.to_json()).decode()},
    )
    assert ctx.result_for(NodeKey("text")) == OK
    assert ctx.result_for(NodeKey("parsed")) == FAILED
    assert ctx.summary_for(NodeKey("dict")) == stored
    assert ctx.summary_for(NodeKey("text")) == stored


def test_from_serialized_after_kwargs_rehydration() -> None:
    # What the worker sees: the engine's payload inside the kwargs JSON, decoded once.
    stored = summary()
    payload = {
        "results": {"a": loads_json(task_result_to_json(OK))},
        "summaries": {"kid": stored.to_json()},
    }
    # The engine writes this JSON itself (engine.node_kwargs_json), embedding stored results as
    # they are; kwargs_to_json would escape the tagged dicts of a user's own data instead.
    decoded = kwargs_from_json(orjson.dumps({"ctx": payload}).decode())["ctx"]
    assert isinstance(decoded["results"]["a"], TaskResult)
    ctx = WorkflowContext.from_serialized("w", 1, "t", decoded["results"], decoded["summaries"])
    assert ctx.result_for(NodeKey("a")) == OK
    assert ctx.summary_for(NodeKey("kid")) == stored


def test_context_defaults_are_per_instance() -> None:
    first = WorkflowContext(workflow_id="a", task_index=0, task_name="t")
    second = WorkflowContext.from_serialized("b", 0, "t", {"x": OK})
    assert not first.has_result(NodeKey("x"))
    assert second.has_result(NodeKey("x"))


# -- WorkflowMeta ----------------------------------------------------------------------------------


def test_workflow_meta() -> None:
    meta = WorkflowMeta(workflow_id="wf", task_index=2, task_name="wf.add")
    assert meta == WorkflowMeta(**{"workflow_id": "wf", "task_index": 2, "task_name": "wf.add"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.task_index = 3  # pyright: ignore[reportAttributeAccessIssue]


# -- SubWorkflowSummary: the documented and the reference field names ------------------------------


def test_summary_answers_to_the_documented_and_the_reference_field_names() -> None:
    value = summary()
    assert value.total == value.total_tasks == 4
    assert value.completed == value.completed_tasks == 2
    assert value.failed == value.failed_tasks == 1
    assert value.skipped == value.skipped_tasks == 1
    assert value.error == value.error_summary == "one failed"
    assert value.success_case is None
    with pytest.raises(AttributeError):
        value.total = 9  # pyright: ignore[reportAttributeAccessIssue]


def test_summary_status_string_is_converted() -> None:
    assert SubWorkflowSummary(status="FAILED").status is WorkflowStatus.FAILED  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError):
        SubWorkflowSummary(status="NOPE")  # pyright: ignore[reportArgumentType]


def test_summary_json_round_trip() -> None:
    value = summary()
    data = value.to_json()
    assert data["status"] == "COMPLETED"
    assert data["output"]["__pydantic_model__"] is True
    orjson.dumps(data)  # plain JSON
    assert SubWorkflowSummary.from_json(loads_json(orjson.dumps(data))) == value


def test_summary_from_json_is_lenient() -> None:
    value = SubWorkflowSummary.from_json(
        {"status": "weird", "total_tasks": "x", "failed_tasks": -1, "completed_tasks": True}
    )
    assert value == SubWorkflowSummary(status=WorkflowStatus.FAILED)
    assert SubWorkflowSummary.from_json({}).status is WorkflowStatus.FAILED
    assert SubWorkflowSummary.from_json("nonsense").total == 0  # pyright: ignore[reportArgumentType]
    broken_output = {"__pydantic_model__": True, "module": "nowhere", "qualname": "X", "data": {}}
    kept = SubWorkflowSummary.from_json({"status": "COMPLETED", "output": broken_output})
    assert kept.status is WorkflowStatus.COMPLETED
    assert kept.output == broken_output


def test_summary_from_json_accepts_doc_names_and_tagged_form() -> None:
    docs = SubWorkflowSummary.from_json(
        {
            "status": "completed",
            "total": 3,
            "completed": 3,
            "failed": 0,
            "skipped": 0,
            "error": None,
        }
    )
    assert (docs.status, docs.total, docs.completed) == (WorkflowStatus.COMPLETED, 3, 3)
    value = summary()
    tagged = loads_json(dumps_json(value))
    assert tagged["__dataclass__"] is True
    assert SubWorkflowSummary.from_json(tagged) == value


# -- SubWorkflowError: round-trips through the codec -----------------------------------------------


def sub_error(with_summary: bool = True) -> SubWorkflowError:
    return SubWorkflowError(
        error_code=LibraryErrorCode.SUBWORKFLOW_FAILED,
        message="Subworkflow abc failed with status FAILED",
        sub_workflow_id="abc",
        sub_workflow_summary=summary(status=WorkflowStatus.FAILED, output=None)
        if with_summary
        else None,
    )


def test_sub_workflow_error_is_a_task_error() -> None:
    error = sub_error()
    assert isinstance(error, TaskError)
    assert error.sub_workflow_id == "abc"
    assert error.sub_workflow_summary is not None
    assert error.sub_workflow_summary.failed == 1


@pytest.mark.parametrize("with_summary", [True, False])
def test_sub_workflow_error_round_trips_through_the_codec(with_summary: bool) -> None:
    original: TaskResult[Any, TaskError] = TaskResult(err=sub_error(with_summary))
    back = task_result_from_json(task_result_to_json(original))
    assert back == original
    match back.err:
        case SubWorkflowError(sub_workflow_id=child_id, sub_workflow_summary=stored):
            assert child_id == "abc"
            if with_summary:
                assert isinstance(stored, SubWorkflowSummary)
                assert stored.status is WorkflowStatus.FAILED
                assert stored.error_summary == "one failed"
            else:
                assert stored is None
        case _:
            pytest.fail(f"expected a SubWorkflowError, got {back.err!r}")


def test_sub_workflow_error_stored_under_its_former_module_still_decodes() -> None:
    # Rows written before the class moved out of horsies.results record that module.
    stored = orjson.loads(task_result_to_json(TaskResult(err=sub_error())))
    assert stored["err"]["module"] == "horsies.workflows.context"
    stored["err"]["module"] = "horsies.results"
    back = task_result_from_json(orjson.dumps(stored).decode())
    assert isinstance(back.err, SubWorkflowError)
    assert back.err.sub_workflow_id == "abc"


def test_sub_workflow_error_summary_output_is_rehydrated() -> None:
    error = sub_error()
    assert error.sub_workflow_summary is not None
    error.sub_workflow_summary.output = Report(title="partial", rows=1)
    back = task_result_from_json(task_result_to_json(TaskResult(err=error))).err
    assert isinstance(back, SubWorkflowError)
    assert back.sub_workflow_summary is not None
    assert back.sub_workflow_summary.output == Report(title="partial", rows=1)


def test_sub_workflow_error_accepts_a_summary_dict() -> None:
    error = SubWorkflowError(
        sub_workflow_id="x",
        sub_workflow_summary={"status": "FAILED", "total_tasks": 2},  # pyright: ignore[reportArgumentType]
    )
    assert error.sub_workflow_summary == SubWorkflowSummary(
        status=WorkflowStatus.FAILED, total_tasks=2
    )


def test_sub_workflow_error_pickles() -> None:
    error = sub_error()
    assert pickle.loads(pickle.dumps(error)) == error


def test_handle_missing_id_error_is_a_runtime_error() -> None:
    assert issubclass(WorkflowHandleMissingIdError, RuntimeError)
    assert issubclass(WorkflowContextMissingIdError, RuntimeError)
