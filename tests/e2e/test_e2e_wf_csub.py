"""Sub-workflows with real workers: results, failures, summaries, cancel and pause cascades.

The child's summary answers to both sets of field names and is returned by ``summary_for``; a
child's failure round-trips as a SubWorkflowError; ``build_with`` receives its inputs rehydrated;
cancelling a parent cancels its children, and a child cancelled on its own fails its parent's
node. The child specs are built by the worker from
the definitions of ``tests.e2e.apps.wf_control``.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_harness import Db, WorkerProcess, error_of, producer_app, worker_fixture
from horsies.app import Horsies
from horsies.results import LibraryErrorCode
from horsies.workflows.context import SubWorkflowError, SubWorkflowSummary
from horsies.workflows.handle import WorkflowHandle
from horsies.workflows.nodes import NodeKey
from horsies.workflows.status import WorkflowStatus
from wf_control_harness import GET_MS, Gates, node_result, wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHILD_REPORT = {
    "total": 20,  # (2 + 3) * 2 + 10
    "scale_type": "int",
    "seed_type": "TaskResult",
    "stamp_type": "datetime",
    "stamp": wf.STAMP.isoformat(),
    "box_type": "Box",
    "box": "crate:3",
}


app = producer_app(wf.create_app)


worker = worker_fixture("wf_control", "--processes", "4")


def summary_of(error: Any) -> SubWorkflowSummary[Any]:
    """The summary of a SubWorkflowError read back from storage, matched structurally."""
    match error:
        case SubWorkflowError(sub_workflow_summary=SubWorkflowSummary() as summary):
            return summary
        case _:
            raise AssertionError(f"not a SubWorkflowError with a summary: {error!r}")


def test_completed_child_gives_its_result_to_the_parent_node(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = wf.ParentSum.build(app).start()
    result = handle.get(timeout_ms=GET_MS)
    assert handle.status() is WorkflowStatus.COMPLETED, result
    wid = handle.workflow_id

    # The node's result is the child's final result (its output node's), and build_with got
    # the args_from input as a TaskResult, the positional arg, a datetime and a model, all
    # rehydrated.
    assert handle.result_for(wf.ParentSum.sub).unwrap() == CHILD_REPORT
    assert db.node_statuses(wid) == {
        "src": "COMPLETED",
        "sub": "COMPLETED",
        "inspect": "COMPLETED",
    }

    child_id = db.child_workflow_id(wid, "sub")
    child = db.workflow(child_id)
    assert child["status"] == "COMPLETED"
    assert child["parent_workflow_id"] == wid
    assert child["parent_task_index"] == 1
    assert child["depth"] == 1
    assert child["root_workflow_id"] == wid
    assert child["name"] == "wfc_child_sum"
    assert WorkflowHandle(child_id, app.get_broker()).get(timeout_ms=GET_MS).unwrap() == (
        CHILD_REPORT
    )
    assert db.node_statuses(child_id) == {"total": "COMPLETED", "report": "COMPLETED"}

    # Downstream: args_from delivers the child's result, workflow_ctx the real summary
    # (summary_for works), readable under both field names.
    report = result.unwrap()
    assert report["child_type"] == "TaskResult"
    assert report["child_ok"] == CHILD_REPORT
    assert report["has_summary"] is True
    assert report["ctx_result_is_err"] is False
    assert report["summary"] == {
        "type": "SubWorkflowSummary",
        "status": "COMPLETED",
        "success_case": None,
        "output": CHILD_REPORT,
        "total_tasks": 2,
        "completed_tasks": 2,
        "failed_tasks": 0,
        "skipped_tasks": 0,
        "error_summary": None,
        "total": 2,
        "completed": 2,
        "failed": 0,
        "skipped": 0,
        "error": None,
    }


def test_failed_child_fails_the_parent_node_with_a_subworkflow_error(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = wf.ParentFail.build(app).start()
    final = error_of(handle.get(timeout_ms=GET_MS))
    wid = handle.workflow_id
    assert handle.status() is WorkflowStatus.FAILED
    child_id = db.child_workflow_id(wid, "sub")
    assert db.workflow(child_id)["status"] == "FAILED"
    assert db.node_statuses(child_id) == {
        "fine": "COMPLETED",
        "boom": "FAILED",
        "after": "SKIPPED",
    }

    # The stored node error reads back as a SubWorkflowError.
    node_error = error_of(handle.result_for(wf.ParentFail.sub))
    assert isinstance(node_error, SubWorkflowError)
    assert node_error.error_code == LibraryErrorCode.SUBWORKFLOW_FAILED
    assert node_error.sub_workflow_id == child_id
    assert node_error.message == f"Subworkflow {child_id} failed with status FAILED"
    summary = summary_of(node_error)
    assert summary.status is WorkflowStatus.FAILED
    assert (summary.total, summary.completed, summary.failed, summary.skipped) == (3, 1, 1, 1)
    assert summary.total_tasks == 3
    assert summary.error_summary == summary.error == "child boom"
    assert summary.output is None
    # The workflow's own error is that node error, still a SubWorkflowError.
    assert isinstance(final, SubWorkflowError)
    assert final.sub_workflow_id == child_id

    # FAIL policy: the join-all dependent is skipped, the allow_failed_deps one runs and sees the
    # SubWorkflowError and the child's summary.
    assert db.node_statuses(wid) == {"sub": "FAILED", "skipped": "SKIPPED", "handler": "COMPLETED"}
    report = handle.results()["handler"].unwrap()
    assert report["child_type"] == "TaskResult"
    assert report["error_type"] == "SubWorkflowError"
    assert report["error_code"] == "SUBWORKFLOW_FAILED"
    assert report["ctx_result_is_err"] is True
    seen = report["summary"]
    assert seen["status"] == "FAILED"
    assert (seen["total"], seen["completed"], seen["failed"], seen["skipped"]) == (3, 1, 1, 1)
    assert seen["error"] == seen["error_summary"] == "child boom"


def test_child_cancelled_by_its_own_handle_fails_the_parent_node(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.ParentGate.build_with(app, gates_dir=gates.path).start()
    wid = handle.workflow_id
    child_id = db.child_workflow_id(wid, "sub")
    child = WorkflowHandle(child_id, app.get_broker())
    gates.wait_started("child")

    child.cancel()

    assert child.status() is WorkflowStatus.CANCELLED
    # A child cancelled on its own: the parent's node fails with a SubWorkflowError and the
    # parent goes on (FAIL policy).
    final = error_of(handle.get(timeout_ms=GET_MS))
    assert handle.status() is WorkflowStatus.FAILED
    assert isinstance(final, SubWorkflowError)
    node_error = error_of(handle.result_for(NodeKey("sub")))
    assert isinstance(node_error, SubWorkflowError)
    assert node_error.sub_workflow_id == child_id
    summary = summary_of(node_error)
    assert summary.status is WorkflowStatus.CANCELLED
    assert summary.total == 2
    assert db.node_statuses(wid) == {"sub": "FAILED", "after": "SKIPPED", "rescue": "COMPLETED"}
    report = handle.results()["rescue"].unwrap()
    assert report["error_type"] == "SubWorkflowError"
    assert report["summary"]["status"] == "CANCELLED"

    # The child's running gate is stopped; nothing changes any more.
    db.wait_node(child_id, "gate", "FAILED")
    assert child.status() is WorkflowStatus.CANCELLED
    assert handle.status() is WorkflowStatus.FAILED
    assert db.node_statuses(child_id)["tail"] == "SKIPPED"


def test_cancel_reaches_the_child_workflow(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.ParentGate.build_with(app, gates_dir=gates.path).start()
    wid = handle.workflow_id
    child_id = db.child_workflow_id(wid, "sub")
    child = WorkflowHandle(child_id, app.get_broker())
    gates.wait_started("child")

    handle.cancel()

    assert handle.status() is WorkflowStatus.CANCELLED
    assert child.status() is WorkflowStatus.CANCELLED  # the cancel reached the child
    assert error_of(child.get(timeout_ms=GET_MS)).error_code == (
        LibraryErrorCode.WORKFLOW_CANCELLED
    )
    assert db.node_statuses(child_id)["tail"] == "SKIPPED"
    parent_nodes = db.node_statuses(wid)
    assert parent_nodes["after"] == "SKIPPED"
    assert parent_nodes["rescue"] == "SKIPPED"

    # The child's running gate is stopped too: cancelling reaches the running tasks of the tree.
    gate = db.wait_node(child_id, "gate", "FAILED")
    assert db.status(gate["task_id"]) == "CANCELLED"
    assert child.status() is WorkflowStatus.CANCELLED
    assert handle.status() is WorkflowStatus.CANCELLED
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == (
        LibraryErrorCode.WORKFLOW_CANCELLED
    )
    assert [t["task_name"] for t in db.workflow_tasks(child_id)] == ["wfc.gate"]
    assert db.workflow_tasks(wid) == []
    assert db.node_statuses(wid)["rescue"] == "SKIPPED"


def test_pause_cascades_to_the_child_and_resume_resumes_it(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.ParentGate.build_with(app, gates_dir=gates.path).start()
    wid = handle.workflow_id
    child_id = db.child_workflow_id(wid, "sub")
    child = WorkflowHandle(child_id, app.get_broker())
    gates.wait_started("child")

    assert handle.pause() is True
    assert handle.status() is WorkflowStatus.PAUSED
    assert child.status() is WorkflowStatus.PAUSED
    assert error_of(child.get(timeout_ms=GET_MS)).error_code == LibraryErrorCode.WORKFLOW_PAUSED

    # The child's running gate finishes; its successor waits for the resume.
    gates.release("child")
    db.wait_node(child_id, "gate", "COMPLETED")
    assert db.node_statuses(child_id)["tail"] == "PENDING"
    assert len(db.workflow_tasks(child_id)) == 1
    assert child.status() is WorkflowStatus.PAUSED
    assert db.nodes(wid)["sub"]["status"] == "RUNNING"

    assert handle.resume() is True
    result = handle.get(timeout_ms=GET_MS)
    assert handle.status() is WorkflowStatus.COMPLETED, result
    db.wait_workflow(child_id, "COMPLETED", timeout=1)
    assert db.node_statuses(child_id) == {"gate": "COMPLETED", "tail": "COMPLETED"}
    assert db.node_statuses(wid) == {
        "sub": "COMPLETED",
        "after": "COMPLETED",
        "rescue": "COMPLETED",
    }
    assert node_result(db.nodes(wid)["sub"]).unwrap() == "tail"
    assert result.unwrap()["rescue"].unwrap()["child_ok"] == "tail"
    assert gates.runs("child") == 1
