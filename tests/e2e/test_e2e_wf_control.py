"""Workflow control flow with real workers: on_error=PAUSE, pause(), resume(), cancel().

get() on a PAUSED workflow answers WORKFLOW_PAUSED at once; after a pause, tasks already enqueued
may still run but nothing new is enqueued until resume; a cancelled workflow stays CANCELLED. The
workflows are class-based definitions of ``tests.e2e.apps.wf_control``, built in
this process with a producer app on the module's database and executed by one worker.

The gates, node and task queries and waits are in ``wf_control_harness`` (shared with the other
``test_e2e_wf_c*.py`` modules).
"""

from __future__ import annotations

import time

import pytest
from e2e_harness import Db, WorkerProcess, error_of, producer_app, wait_until, worker_fixture
from horsies.app import Horsies
from horsies.results import LibraryErrorCode
from horsies.workflows.handle import WorkflowHandle
from horsies.workflows.status import WorkflowStatus
from wf_control_harness import GET_MS, WAIT_S, Gates, node_result, wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

app = producer_app(wf.create_app)
worker = worker_fixture("wf_control", "--processes", "4")


# -- on_error=PAUSE --------------------------------------------------------------------------------


def test_on_error_pause_holds_dependents_and_resume_continues(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.PauseOnError.build_with(app, gates_dir=gates.path).start()
    gates.wait_started("good")

    # The failure pauses the workflow; get() reports that instead of waiting for the end.
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == LibraryErrorCode.WORKFLOW_PAUSED
    started = time.monotonic()
    paused = error_of(handle.get(timeout_ms=GET_MS))
    assert time.monotonic() - started < 3.0
    assert paused.error_code == LibraryErrorCode.WORKFLOW_PAUSED
    assert handle.status() is WorkflowStatus.PAUSED
    row = db.workflow(handle.workflow_id)
    assert "pause me" in (row["error"] or "")
    assert row["completed_at"] is None

    # A task already running finishes and its result is recorded, but nothing propagates.
    gates.release("good")
    good = db.wait_node(handle.workflow_id, "good", "COMPLETED")
    assert node_result(good).unwrap() == "good"
    statuses = db.node_statuses(handle.workflow_id)
    assert statuses == {
        "bad": "FAILED",
        "good": "COMPLETED",
        "after_good": "PENDING",
        "after_bad": "PENDING",
        "rescue": "PENDING",
    }
    assert sorted(t["task_name"] for t in db.workflow_tasks(handle.workflow_id)) == [
        "wfc.fail",
        "wfc.gate",
    ]
    assert handle.status() is WorkflowStatus.PAUSED

    assert handle.resume() is True
    assert handle.resume() is False  # no longer PAUSED
    final = error_of(handle.get(timeout_ms=GET_MS))
    # FAILED: a node failed; the workflow error is the stored one.
    assert handle.status() is WorkflowStatus.FAILED
    assert final.error_code == "BOOM"
    assert final.message == "pause me"
    assert db.node_statuses(handle.workflow_id) == {
        "bad": "FAILED",
        "good": "COMPLETED",
        "after_good": "COMPLETED",
        "after_bad": "SKIPPED",
        "rescue": "COMPLETED",
    }
    # The failed node is not run again; rescue received its error.
    names = [t["task_name"] for t in db.workflow_tasks(handle.workflow_id)]
    assert names.count("wfc.fail") == 1
    assert gates.runs("good") == 1
    rescue = handle.results()["rescue"].unwrap()
    assert rescue["error_code"] == "BOOM"
    assert rescue["type"] == "TaskResult"
    assert set(handle.results()) == {"bad", "good", "after_good", "rescue"}


# -- pause() / resume() ----------------------------------------------------------------------------


def test_manual_pause_lets_running_tasks_finish_and_enqueues_nothing_until_resume(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.Gates.build_with(app, gates_dir=gates.path).start()
    gates.wait_started("a", "b")

    assert handle.pause() is True
    assert handle.pause() is False  # already PAUSED
    assert handle.status() is WorkflowStatus.PAUSED
    started = time.monotonic()
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == LibraryErrorCode.WORKFLOW_PAUSED
    assert time.monotonic() - started < 3.0

    gates.release("a", "b")
    for name in ("a", "b"):
        assert node_result(db.wait_node(handle.workflow_id, name, "COMPLETED")).unwrap() == name
    # Both dependencies are done, yet the join is neither READY nor enqueued while paused.
    assert db.node_statuses(handle.workflow_id)["join"] == "PENDING"
    assert len(db.workflow_tasks(handle.workflow_id)) == 2
    assert gates.runs("join") == 0
    assert handle.status() is WorkflowStatus.PAUSED

    assert handle.resume() is True
    result = handle.get(timeout_ms=GET_MS)
    assert handle.status() is WorkflowStatus.COMPLETED
    # No output node: {sink node id: its result}.
    assert result.unwrap()["join"].unwrap() == "joined"
    assert gates.runs("join") == 1
    assert len(db.workflow_tasks(handle.workflow_id)) == 3
    # Neither call changes a finished workflow.
    assert handle.pause() is False
    assert handle.resume() is False
    assert handle.status() is WorkflowStatus.COMPLETED


def test_resume_finishes_a_workflow_whose_nodes_all_ended_while_paused(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.Gates.build_with(app, gates_dir=gates.path, names=("x", "y"), join=False).start()
    gates.wait_started("x", "y")
    assert handle.pause() is True
    gates.release("x", "y")
    wait_until(
        lambda: set(db.node_statuses(handle.workflow_id).values()) == {"COMPLETED"},
        WAIT_S,
        "every node to complete while paused",
    )
    # Every node is terminal, but a paused workflow is not finalized.
    assert handle.status() is WorkflowStatus.PAUSED
    assert db.workflow(handle.workflow_id)["completed_at"] is None

    assert handle.resume() is True
    assert handle.status() is WorkflowStatus.COMPLETED
    result = handle.get(timeout_ms=GET_MS).unwrap()
    assert {key: value.unwrap() for key, value in result.items()} == {"x": "x", "y": "y"}
    assert db.workflow(handle.workflow_id)["completed_at"] is not None


def test_resume_and_pause_of_a_running_workflow(
    worker: WorkerProcess, app: Horsies, gates: Gates
) -> None:
    handle = wf.Gates.build_with(app, gates_dir=gates.path, names=("solo",), join=False).start()
    gates.wait_started("solo")
    assert handle.resume() is False  # RUNNING, not PAUSED
    assert handle.status() is WorkflowStatus.RUNNING
    gates.release("solo")
    assert handle.get(timeout_ms=GET_MS).unwrap()["solo"].unwrap() == "solo"
    assert handle.pause() is False


def test_control_of_an_unknown_workflow(worker: WorkerProcess, app: Horsies) -> None:
    handle = WorkflowHandle("00000000-0000-4000-8000-000000000000", app.get_broker())
    assert handle.pause() is False
    assert handle.resume() is False
    with pytest.raises(ValueError, match="not found"):
        handle.status()


# -- cancel() --------------------------------------------------------------------------------------


def test_cancel_is_final_and_cancels_what_has_not_started(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.CancelMix.build_with(app, gates_dir=gates.path).start()
    wid = handle.workflow_id
    gates.wait_started("running")
    db.wait_node(wid, "running", "RUNNING")
    waiting = db.wait_node(wid, "waiting", "ENQUEUED")
    assert db.status(waiting["task_id"]) == "PENDING"  # on the blocked queue: never claimed
    assert db.node_statuses(wid)["pending"] == "PENDING"

    handle.cancel()

    assert handle.status() is WorkflowStatus.CANCELLED
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == (
        LibraryErrorCode.WORKFLOW_CANCELLED
    )
    statuses = db.node_statuses(wid)
    assert statuses["pending"] == "SKIPPED"
    assert statuses["waiting"] == "SKIPPED"
    assert db.status(waiting["task_id"]) == "CANCELLED"
    assert db.workflow(wid)["completed_at"] is not None

    # The running task is stopped (its child process, a def task); its end is recorded on its
    # node but changes no status.
    running = db.wait_node(wid, "running", "FAILED")
    assert node_result(running).unwrap_err().error_code == LibraryErrorCode.TASK_CANCELLED
    assert db.status(running["task_id"]) == "CANCELLED"
    assert handle.status() is WorkflowStatus.CANCELLED
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == (
        LibraryErrorCode.WORKFLOW_CANCELLED
    )
    assert db.workflow(wid)["result"] is None
    # Nothing new was enqueued: only the gate and the blocked task have task rows.
    assert sorted(t["task_name"] for t in db.workflow_tasks(wid)) == ["wfc.gate", "wfc.parked"]
    assert db.node_statuses(wid) == {
        "running": "FAILED",
        "pending": "SKIPPED",
        "waiting": "SKIPPED",
    }

    # Cancelling again, pausing or resuming changes nothing.
    handle.cancel()
    assert handle.pause() is False
    assert handle.resume() is False
    assert handle.status() is WorkflowStatus.CANCELLED
    assert db.status(waiting["task_id"]) == "CANCELLED"


def test_cancel_of_a_paused_workflow(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.Gates.build_with(app, gates_dir=gates.path).start()
    gates.wait_started("a", "b")
    assert handle.pause() is True
    handle.cancel()
    assert handle.status() is WorkflowStatus.CANCELLED
    assert db.node_statuses(handle.workflow_id)["join"] == "SKIPPED"
    gates.release("a", "b")
    wait_until(
        lambda: db.no_active_nodes(handle.workflow_id), WAIT_S, "the running gates to finish"
    )
    assert handle.status() is WorkflowStatus.CANCELLED
    assert gates.runs("join") == 0
    assert len(db.workflow_tasks(handle.workflow_id)) == 2


def test_cancel_after_a_failure_keeps_the_stored_error(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.PauseOnError.build_with(app, gates_dir=gates.path).start()
    gates.wait_started("good")
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == LibraryErrorCode.WORKFLOW_PAUSED

    handle.cancel()

    assert handle.status() is WorkflowStatus.CANCELLED
    # get() of a CANCELLED workflow returns its stored error when it has one.
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert (error.error_code, error.message) == ("BOOM", "pause me")
    # "good" was running: it is stopped, and its end changes neither status nor error.
    db.wait_node(handle.workflow_id, "good", "FAILED")
    statuses = db.node_statuses(handle.workflow_id)
    assert statuses == {
        "bad": "FAILED",
        "good": "FAILED",
        "after_good": "SKIPPED",
        "after_bad": "SKIPPED",
        "rescue": "SKIPPED",
    }
    assert handle.status() is WorkflowStatus.CANCELLED
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == "BOOM"
    assert len(db.workflow_tasks(handle.workflow_id)) == 2
