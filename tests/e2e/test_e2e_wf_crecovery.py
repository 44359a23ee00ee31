"""Workflow recovery with real workers: killed workers and desynchronised node rows.

Every worker's reaper reconciles node rows with their tasks; a stale RUNNING task fails with
WORKER_CRASHED, and such a crash is retried when listed in auto_retry_for. The app's recovery
thresholds are 3 s with 1 s checks.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from e2e_harness import Db, StartWorker, error_of, producer_app, wait_until
from horsies.app import Horsies
from horsies.codec import task_result_to_json
from horsies.results import LibraryErrorCode, TaskResult
from horsies.workflows.nodes import NodeKey
from horsies.workflows.status import WorkflowStatus
from wf_control_harness import Gates, node_result, wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

RECOVERY_GET_MS = 45_000


app = producer_app(wf.create_app)


def test_killed_worker_tasks_end_per_policy_and_workflows_finish_through_the_reaper(
    start_worker: StartWorker, app: Horsies, db: Db, gates: Gates
) -> None:
    plain_gates, retried_gates = gates.sub("plain"), gates.sub("retried")
    doomed = start_worker("wf_control", "--processes", "2")
    plain = wf.CrashFlow.build_with(app, gates_dir=plain_gates.path).start()
    retried = wf.CrashFlow.build_with(app, gates_dir=retried_gates.path, retry=True).start()
    plain_gates.wait_started("victim")
    retried_gates.wait_started("victim")
    victims = {
        handle.workflow_id: db.wait_node(handle.workflow_id, "victim", "RUNNING")["task_id"]
        for handle in (plain, retried)
    }
    child_pids = {
        int(db.wait_status(task_id, "RUNNING")["worker_pid"]) for task_id in victims.values()
    }

    os.kill(doomed.pid, signal.SIGKILL)
    assert doomed.wait_exit(10) == -signal.SIGKILL
    for pid in child_pids:
        wait_until(lambda p=pid: not psutil.pid_exists(p), 10, "the orphaned child to exit")
    # Only the retried attempt can pass its gate: the killed attempts are gone.
    retried_gates.release("victim")
    start_worker("wf_control", "--processes", "2")

    # No retry: the reaper fails the task as WORKER_CRASHED, the node fails, the FAIL policy
    # skips the dependent, runs the allow_failed_deps node, and the workflow ends FAILED.
    error = error_of(plain.get(timeout_ms=RECOVERY_GET_MS))
    assert plain.status() is WorkflowStatus.FAILED
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED
    assert db.status(victims[plain.workflow_id]) == "FAILED"
    assert db.node_statuses(plain.workflow_id) == {
        "victim": "FAILED",
        "after": "SKIPPED",
        "rescue": "COMPLETED",
    }
    rescue = plain.results()["rescue"].unwrap()
    assert rescue["error_code"] == "WORKER_CRASHED"
    assert plain_gates.runs("victim") == 1

    # Retried after the crash (the node stays RUNNING across attempts), then it completes.
    result = retried.get(timeout_ms=RECOVERY_GET_MS)
    assert retried.status() is WorkflowStatus.COMPLETED, result
    assert db.node_statuses(retried.workflow_id) == {
        "victim": "COMPLETED",
        "after": "COMPLETED",
        "rescue": "COMPLETED",
    }
    row = db.task(victims[retried.workflow_id])
    assert row["status"] == "COMPLETED"
    assert row["retry_count"] == 1
    assert retried_gates.runs("victim") == 2
    assert result.unwrap()["rescue"].unwrap()["ok"] == "victim"


def test_node_rows_out_of_sync_with_their_tasks_are_reconciled(
    start_worker: StartWorker, app: Horsies, db: Db, gates: Gates
) -> None:
    start_worker("wf_control", "--processes", "2")
    handle = wf.Desync.build_with(app, gates_dir=gates.path).start()
    wid = handle.workflow_id
    gates.wait_started("forged", "lost")
    forged = db.wait_node(wid, "forged", "RUNNING")["task_id"]
    lost = db.wait_node(wid, "lost", "RUNNING")["task_id"]

    # Finish both task rows behind the engine's back while the tasks still run: the nodes say
    # RUNNING until a reaper notices.
    db.execute(
        "UPDATE horsies_tasks SET status = 'COMPLETED', result = %s, completed_at = now(),"
        " updated_at = now() WHERE id = %s",
        (task_result_to_json(TaskResult(ok="forged by hand")), forged),
    )
    db.execute(
        "UPDATE horsies_tasks SET status = 'FAILED', result = NULL, failed_at = now(),"
        " updated_at = now() WHERE id = %s",
        (lost,),
    )

    error = error_of(handle.get(timeout_ms=RECOVERY_GET_MS))
    assert handle.status() is WorkflowStatus.FAILED
    assert db.node_statuses(wid) == {
        "forged": "COMPLETED",
        "lost": "FAILED",
        "shown": "COMPLETED",
        "blocked": "SKIPPED",
    }
    # A stored result is taken as it is; a missing one is synthesized.
    assert node_result(db.nodes(wid)["forged"]).unwrap() == "forged by hand"
    assert handle.results()["shown"].unwrap()["ok"] == "forged by hand"
    lost_error = error_of(handle.result_for(NodeKey("lost")))
    assert lost_error.error_code == LibraryErrorCode.WORKER_CRASHED
    assert lost_error.data == {"task_id": lost, "task_status": "FAILED", "recovery": "case_1_7"}
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED
