"""Workflow control flow with real workers: on_error=PAUSE, pause(), resume(), cancel().

Spec 03 §12 and §15, decisions D26 (get() on a PAUSED workflow), D27 (pause and enqueued tasks),
D28 (cancel). The workflows are class-based definitions of ``tests.e2e.apps.wf_control``, built in
this process with a producer app on the module's database and executed by one worker.

The helpers at the top (gates, node/task queries, the app import under the worker's module name)
are shared with the other ``test_e2e_wf_c*.py`` modules.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import ROOT, Db, StartWorker, WorkerProcess, producer_app, wait_until
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.workflows.handle import WorkflowHandle
from horsies.workflows.status import WorkflowStatus

# The worker imports the app as ``tests.e2e.apps.wf_control`` and re-imports the definitions by
# the module name recorded on each workflow row, so this process must use the same name.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
from tests.e2e.apps import wf_control as wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

GET_MS = 30_000
WAIT_S = 30.0
ACTIVE_NODE = ("ENQUEUED", "RUNNING")


# -- shared helpers --------------------------------------------------------------------------------


class Gates:
    """The files of the gate tasks of one test (see ``wf_control.gate``)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory

    @property
    def path(self) -> str:
        return str(self.dir)

    def sub(self, name: str) -> Gates:
        """A gates directory of its own (one per workflow when a test runs several)."""
        return Gates(self.dir / name)

    def runs(self, name: str) -> int:
        """How many times the gate (or record node) ``name`` started."""
        path = self.dir / f"{name}.runs"
        if not path.exists():
            return 0
        return len([line for line in path.read_text().splitlines() if line.strip()])

    def wait_started(self, *names: str, timeout: float = WAIT_S) -> None:
        for name in names:
            wait_until(lambda n=name: self.runs(n) >= 1, timeout, f"gate {name} to start")

    def release(self, *names: str) -> None:
        for name in names:
            (self.dir / f"{name}.open").touch()

    def release_all(self) -> None:
        """Open every gate below this directory (teardown: never leave a child blocked)."""
        for directory in [self.dir, *(p for p in self.dir.rglob("*") if p.is_dir())]:
            (directory / wf.ALL_GATES).touch()


def gates_fixture(tmp_path: Path) -> Iterator[Gates]:
    gates = Gates(tmp_path / "gates")
    yield gates
    gates.release_all()


def error_of(result: TaskResult[Any, TaskError]) -> TaskError:
    assert result.is_err(), result
    return result.unwrap_err()


def workflow_row(db: Db, workflow_id: str) -> dict[str, Any]:
    rows = db.query("SELECT * FROM horsies_workflows WHERE id = %s", (workflow_id,))
    assert rows, f"workflow {workflow_id} not found"
    return rows[0]


def nodes(db: Db, workflow_id: str) -> dict[str, dict[str, Any]]:
    """The node rows of a workflow by node id."""
    rows = db.query(
        "SELECT * FROM horsies_workflow_tasks WHERE workflow_id = %s ORDER BY task_index",
        (workflow_id,),
    )
    return {row["node_id"]: row for row in rows}


def node_statuses(db: Db, workflow_id: str) -> dict[str, str]:
    return {node_id: row["status"] for node_id, row in nodes(db, workflow_id).items()}


def node_result(row: dict[str, Any]) -> TaskResult[Any, TaskError]:
    assert row["result"] is not None, row
    return task_result_from_json(row["result"])


def task_rows(db: Db, workflow_id: str) -> list[dict[str, Any]]:
    """The horsies_tasks rows created for a workflow's task nodes."""
    return db.query(
        "SELECT * FROM horsies_tasks WHERE workflow_id = %s ORDER BY sent_at, id", (workflow_id,)
    )


def wait_node(
    db: Db, workflow_id: str, node_id: str, *statuses: str, timeout: float = WAIT_S
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        row = nodes(db, workflow_id).get(node_id)
        return row if row is not None and row["status"] in statuses else None

    return wait_until(check, timeout, f"node {node_id} of {workflow_id} to be {statuses}")


def wait_workflow(db: Db, workflow_id: str, status: str, timeout: float = WAIT_S) -> None:
    wait_until(
        lambda: workflow_row(db, workflow_id)["status"] == status,
        timeout,
        f"workflow {workflow_id} to be {status}",
    )


def child_id_of(db: Db, workflow_id: str, node_id: str) -> str:
    """The child workflow started by a sub-workflow node (waits for it)."""
    row = wait_until(
        lambda: (r := nodes(db, workflow_id)[node_id])["sub_workflow_id"] and r,
        WAIT_S,
        f"child workflow of node {node_id}",
    )
    return str(row["sub_workflow_id"])


def no_active_nodes(db: Db, workflow_id: str) -> bool:
    return not any(s in ACTIVE_NODE for s in node_statuses(db, workflow_id).values())


# -- fixtures --------------------------------------------------------------------------------------


app = producer_app(wf.create_app)


@pytest.fixture(scope="module")
def worker(start_worker: StartWorker, app: Horsies) -> WorkerProcess:
    del app  # the producer creates the schema before the worker starts
    return start_worker("wf_control", "--processes", "4")


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Gates]:
    yield from gates_fixture(tmp_path)


# -- on_error=PAUSE --------------------------------------------------------------------------------


def test_on_error_pause_holds_dependents_and_resume_continues(
    worker: WorkerProcess, app: Horsies, db: Db, gates: Gates
) -> None:
    handle = wf.PauseOnError.build_with(app, gates_dir=gates.path).start()
    gates.wait_started("good")

    # The failure pauses the workflow; get() reports that instead of waiting for the end (D26).
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == LibraryErrorCode.WORKFLOW_PAUSED
    started = time.monotonic()
    paused = error_of(handle.get(timeout_ms=GET_MS))
    assert time.monotonic() - started < 3.0
    assert paused.error_code == LibraryErrorCode.WORKFLOW_PAUSED
    assert handle.status() is WorkflowStatus.PAUSED
    row = workflow_row(db, handle.workflow_id)
    assert "pause me" in (row["error"] or "")
    assert row["completed_at"] is None

    # A task already running finishes and its result is recorded, but nothing propagates.
    gates.release("good")
    good = wait_node(db, handle.workflow_id, "good", "COMPLETED")
    assert node_result(good).unwrap() == "good"
    statuses = node_statuses(db, handle.workflow_id)
    assert statuses == {
        "bad": "FAILED",
        "good": "COMPLETED",
        "after_good": "PENDING",
        "after_bad": "PENDING",
        "rescue": "PENDING",
    }
    assert sorted(t["task_name"] for t in task_rows(db, handle.workflow_id)) == [
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
    assert node_statuses(db, handle.workflow_id) == {
        "bad": "FAILED",
        "good": "COMPLETED",
        "after_good": "COMPLETED",
        "after_bad": "SKIPPED",
        "rescue": "COMPLETED",
    }
    # The failed node is not run again; rescue received its error.
    names = [t["task_name"] for t in task_rows(db, handle.workflow_id)]
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
        assert node_result(wait_node(db, handle.workflow_id, name, "COMPLETED")).unwrap() == name
    # Both dependencies are done, yet the join is neither READY nor enqueued while paused.
    assert node_statuses(db, handle.workflow_id)["join"] == "PENDING"
    assert len(task_rows(db, handle.workflow_id)) == 2
    assert gates.runs("join") == 0
    assert handle.status() is WorkflowStatus.PAUSED

    assert handle.resume() is True
    result = handle.get(timeout_ms=GET_MS)
    assert handle.status() is WorkflowStatus.COMPLETED
    # No output node: {sink node id: its result}.
    assert result.unwrap()["join"].unwrap() == "joined"
    assert gates.runs("join") == 1
    assert len(task_rows(db, handle.workflow_id)) == 3
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
        lambda: set(node_statuses(db, handle.workflow_id).values()) == {"COMPLETED"},
        WAIT_S,
        "every node to complete while paused",
    )
    # Every node is terminal, but a paused workflow is not finalized.
    assert handle.status() is WorkflowStatus.PAUSED
    assert workflow_row(db, handle.workflow_id)["completed_at"] is None

    assert handle.resume() is True
    assert handle.status() is WorkflowStatus.COMPLETED
    result = handle.get(timeout_ms=GET_MS).unwrap()
    assert {key: value.unwrap() for key, value in result.items()} == {"x": "x", "y": "y"}
    assert workflow_row(db, handle.workflow_id)["completed_at"] is not None


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
    wait_node(db, wid, "running", "RUNNING")
    waiting = wait_node(db, wid, "waiting", "ENQUEUED")
    assert db.status(waiting["task_id"]) == "PENDING"  # on the blocked queue: never claimed
    assert node_statuses(db, wid)["pending"] == "PENDING"

    handle.cancel()

    assert handle.status() is WorkflowStatus.CANCELLED
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == (
        LibraryErrorCode.WORKFLOW_CANCELLED
    )
    statuses = node_statuses(db, wid)
    assert statuses["pending"] == "SKIPPED"
    assert statuses["waiting"] == "SKIPPED"
    assert statuses["running"] == "RUNNING"  # a running task is not interrupted
    assert db.status(waiting["task_id"]) == "CANCELLED"
    assert workflow_row(db, wid)["completed_at"] is not None

    # The running task finishes; its result is recorded but changes no status.
    gates.release("running")
    running = wait_node(db, wid, "running", "COMPLETED")
    assert node_result(running).unwrap() == "running"
    assert db.status(running["task_id"]) == "COMPLETED"
    assert handle.status() is WorkflowStatus.CANCELLED
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == (
        LibraryErrorCode.WORKFLOW_CANCELLED
    )
    assert workflow_row(db, wid)["result"] is None
    # Nothing new was enqueued: only the gate and the blocked task have task rows.
    assert sorted(t["task_name"] for t in task_rows(db, wid)) == ["wfc.gate", "wfc.parked"]
    assert node_statuses(db, wid) == {
        "running": "COMPLETED",
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
    assert node_statuses(db, handle.workflow_id)["join"] == "SKIPPED"
    gates.release("a", "b")
    wait_until(
        lambda: no_active_nodes(db, handle.workflow_id), WAIT_S, "the running gates to finish"
    )
    assert handle.status() is WorkflowStatus.CANCELLED
    assert gates.runs("join") == 0
    assert len(task_rows(db, handle.workflow_id)) == 2


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
    statuses = node_statuses(db, handle.workflow_id)
    assert statuses == {
        "bad": "FAILED",
        "good": "RUNNING",
        "after_good": "SKIPPED",
        "after_bad": "SKIPPED",
        "rescue": "SKIPPED",
    }
    gates.release("good")
    wait_node(db, handle.workflow_id, "good", "COMPLETED")
    assert handle.status() is WorkflowStatus.CANCELLED
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == "BOOM"
    assert len(task_rows(db, handle.workflow_id)) == 2
