"""Workflow patterns end to end: a real ``horsies worker`` (2 children) runs every node.

Each test starts a workflow from this process
(a producer app with the worker's queue configuration) and checks the documented node statuses,
results and workflow outcome. Nodes that must not finish yet wait on a gate file the test opens.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Db, WorkerProcess, error_of, producer_app, wait_until, worker_fixture
from horsies import (
    Horsies,
    LibraryErrorCode,
    TaskNode,
    WorkflowHandle,
    WorkflowStatus,
    WorkflowTaskStatus,
)
from horsies.codec import task_result_from_json
from node_status_letters import C, F, S
from wf_apps import wf_patterns as wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GET_MS = 30_000
WAIT_S = 30.0


app = producer_app(wf.make_app)


worker = worker_fixture("wf_patterns", "--processes", "2")


class Gate:
    """A file a ``wfp.gate`` task waits for; opened by the test (and always at teardown)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> None:
        self.path.touch()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    opened = Gate(tmp_path / "gate")
    yield opened
    opened.open()  # never leave a worker child blocked on a failed test's gate


def statuses(handle: WorkflowHandle) -> dict[str, WorkflowTaskStatus]:
    return {str(t.node_id): t.status for t in handle.tasks()}


def wait_node(handle: WorkflowHandle, node_id: str, status: WorkflowTaskStatus) -> None:
    try:
        wait_until(
            lambda: statuses(handle)[node_id] is status, WAIT_S, f"node {node_id} to be {status}"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; node statuses: {statuses(handle)}") from None


def ok_picture(value: Any) -> dict[str, Any]:
    return {"type": "TaskResult", "is_ok": True, "ok": value}


# -- data flow -------------------------------------------------------------------------------------


def test_chain_injects_dependency_results_as_task_results(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = wf.ChainWorkflow.build(app).start()
    result = handle.get(timeout_ms=GET_MS)
    # Output node c received b's TaskResult, whose ok is what b received: a's TaskResult (the
    # injection replaced b's static kwarg of the same name).
    assert result.unwrap() == ok_picture(ok_picture(20))
    assert handle.status() is WorkflowStatus.COMPLETED
    assert statuses(handle) == {"a": C, "b": C, "c": C}


def test_fan_out_fan_in_keys_one_task_function_used_three_times_by_node_id(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = wf.FanWorkflow.build(app).start()
    assert handle.get(timeout_ms=GET_MS).unwrap() == 3 * 1 + 3 * 2 + 3 * 3
    results = handle.results()
    assert {key: r.unwrap() for key, r in results.items()} == {
        "src": 3,
        "x1": 3,
        "x2": 6,
        "x3": 9,
        "total": 18,
    }
    infos = handle.tasks()
    assert [t.name for t in infos] == ["wfp.value", "wfp.mul", "wfp.mul", "wfp.mul", "wfp.sum3"]
    src, *middle, total = infos
    assert src.completed_at is not None
    for info in middle:
        assert info.started_at is not None
        assert info.completed_at is not None
        assert info.started_at >= src.completed_at  # fan-out only after the source finished
    # Fan-in: the sum above needs all three injected results.
    assert total.status is C
    assert total.started_at is not None
    assert total.started_at >= src.completed_at


def test_diamond_joins_both_branches_and_result_is_keyed_by_sink(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = wf.DiamondWorkflow.build(app).start()
    result = handle.get(timeout_ms=GET_MS).unwrap()
    # No output node: {node_id: TaskResult} over the sinks only.
    assert set(result) == {"bottom"}
    assert result["bottom"].unwrap() == 2 * 10 + 2**2
    assert statuses(handle) == {"top": C, "left": C, "right": C, "bottom": C}


def test_workflow_ctx_from_gives_exactly_the_listed_results(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = wf.ContextWorkflow.build(app).start()
    outcome = handle.get(timeout_ms=GET_MS)
    assert error_of(outcome).message == "b failed"  # no success policy: one failure fails it
    seen = handle.result_for(wf.ctx_reader).unwrap()
    assert seen["workflow_id"] == handle.workflow_id
    assert seen["task_index"] == 3
    assert seen["task_name"] == "wfp.ctx"
    assert seen["seen"]["ctx_a"] == ok_picture(10)
    assert seen["seen"]["ctx_b"] == {
        "type": "TaskResult",
        "is_ok": False,
        "code": "BOOM",
        "message": "b failed",
        "data": {"message": "b failed"},
    }
    # ctx_c is a dependency but not in workflow_ctx_from: result_for raises KeyError.
    assert seen["seen"]["ctx_c"] is None
    assert seen["by_node_object"] == 10  # result_for(TaskNode) with an explicit node_id
    assert statuses(handle) == {"ctx_a": C, "ctx_b": F, "ctx_c": C, "ctx_reader": C}


def test_workflow_meta_is_injected_in_workflows_and_none_outside(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = wf.MetaWorkflow.build(app).start()
    assert handle.get(timeout_ms=GET_MS).unwrap() == {
        "type": "WorkflowMeta",
        "workflow_id": handle.workflow_id,
        "task_index": 1,
        "task_name": "wfp.meta",
    }
    task_id = app.get_broker().enqueue("wfp.meta", queue_name="main")
    row = db.wait_status(task_id, "COMPLETED", timeout=WAIT_S)
    assert task_result_from_json(row["result"]).unwrap() is None


# -- joins and failures ----------------------------------------------------------------------------


def test_join_all_with_a_failed_dependency_skips_and_cascades(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = wf.CascadeWorkflow.build(app).start()
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert (error.error_code, error.message) == ("BOOM", "cascade root failed")
    assert handle.status() is WorkflowStatus.FAILED
    assert statuses(handle) == {"ok": C, "bad": F, "mid": S, "end": S, "side": C}
    rows = db.nodes(handle.workflow_id)
    assert rows["mid"]["task_id"] is None  # skipped nodes never get a task row
    assert rows["end"]["task_id"] is None
    assert (rows["mid"]["started_at"], rows["mid"]["completed_at"]) == (None, None)  # never ran


def test_on_error_fail_keeps_running_until_every_node_ended(
    worker: WorkerProcess, app: Horsies, gate: Gate
) -> None:
    bad = TaskNode(fn=wf.fail, kwargs={"message": "fail fast"}, node_id="bad")
    dependent = TaskNode(fn=wf.value, args=(1,), waits_for=[bad], node_id="dependent")
    slow = TaskNode(fn=wf.gate, kwargs={"path": str(gate.path)}, node_id="slow")
    handle = app.workflow("wfp_on_error_fail", [bad, dependent, slow]).start()
    wait_node(handle, "dependent", S)
    # The failure is stored but the workflow stays RUNNING while a node is still going.
    assert handle.status() is WorkflowStatus.RUNNING
    assert statuses(handle)["slow"] not in (C, F, S)
    gate.open()
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert (error.error_code, error.message, error.data) == (
        "BOOM",
        "fail fast",
        {"message": "fail fast"},
    )
    assert handle.status() is WorkflowStatus.FAILED
    assert statuses(handle) == {"bad": F, "dependent": S, "slow": C}


def test_join_any_runs_after_first_success_and_skips_when_all_fail(
    worker: WorkerProcess, app: Horsies, gate: Gate
) -> None:
    failing = TaskNode(fn=wf.fail, node_id="failing")
    quick = TaskNode(fn=wf.value, args=(7,), node_id="quick")
    slow = TaskNode(fn=wf.gate, kwargs={"path": str(gate.path)}, node_id="slow")
    first = TaskNode(
        fn=wf.inspect_arg,
        waits_for=[failing, quick, slow],
        args_from={"x": quick},
        join="any",
        node_id="first",
    )
    failing_too = TaskNode(fn=wf.fail, node_id="failing_too")
    none_ok = TaskNode(
        fn=wf.value, args=("never",), waits_for=[failing, failing_too], join="any", node_id="none"
    )
    handle = app.workflow(
        "wfp_join_any", [failing, quick, slow, first, failing_too, none_ok]
    ).start()
    # `first` completes while `slow` is still blocked: it did not wait for every dependency.
    wait_node(handle, "first", C)
    wait_node(handle, "none", S)
    assert statuses(handle)["slow"] not in (C, F, S)
    assert handle.result_for(first).unwrap() == ok_picture(7)
    gate.open()
    assert error_of(handle.get(timeout_ms=GET_MS)).error_code == "BOOM"
    assert statuses(handle) == {
        "failing": F,
        "quick": C,
        "slow": C,
        "first": C,
        "failing_too": F,
        "none": S,
    }


def test_join_quorum_runs_at_threshold_and_skips_when_impossible(
    worker: WorkerProcess, app: Horsies, gate: Gate
) -> None:
    one = TaskNode(fn=wf.value, args=(1,), node_id="one")
    two = TaskNode(fn=wf.value, args=(2,), node_id="two")
    bad = TaskNode(fn=wf.fail, node_id="bad")
    worse = TaskNode(fn=wf.fail, node_id="worse")
    slow = TaskNode(fn=wf.gate, kwargs={"path": str(gate.path)}, node_id="slow")
    reached = TaskNode(
        fn=wf.value,
        args=("reached",),
        waits_for=[one, bad, two, slow],
        join="quorum",
        min_success=2,
        node_id="reached",
    )
    impossible = TaskNode(
        fn=wf.value,
        args=("never",),
        waits_for=[bad, worse, slow],
        join="quorum",
        min_success=2,
        node_id="impossible",
    )
    handle = app.workflow(
        "wfp_join_quorum", [one, two, bad, worse, slow, reached, impossible]
    ).start()
    # Both decisions are taken while `slow` is still blocked.
    wait_node(handle, "reached", C)
    wait_node(handle, "impossible", S)
    assert statuses(handle)["slow"] not in (C, F, S)
    gate.open()
    assert handle.get(timeout_ms=GET_MS).is_err()
    assert statuses(handle) == {
        "one": C,
        "two": C,
        "bad": F,
        "worse": F,
        "slow": C,
        "reached": C,
        "impossible": S,
    }


def test_allow_failed_deps_receives_err_result_and_upstream_skipped_sentinel(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = wf.AllowFailedWorkflow.build(app).start()
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert error.message == "dependency failed"  # a recovery node does not rescue the workflow
    assert statuses(handle) == {"ok": C, "bad": F, "skipped": S, "recover": C}
    assert handle.result_for(wf.afd_recover).unwrap() == {
        "good": ok_picture(5),
        "failed": {
            "type": "TaskResult",
            "is_ok": False,
            "code": "BOOM",
            "message": "dependency failed",
            "data": {"message": "dependency failed"},
        },
        "skipped": {
            "type": "TaskResult",
            "is_ok": False,
            "code": LibraryErrorCode.UPSTREAM_SKIPPED.value,
            "message": "Upstream dependency was SKIPPED",
            "data": {"dependency_index": wf.afd_skipped.index},
        },
    }
    assert wf.afd_skipped.index == 2


# -- conditions ------------------------------------------------------------------------------------


def test_conditions_run_when_and_skip_when(worker: WorkerProcess, app: Horsies) -> None:
    handle = wf.ConditionWorkflow.build(app).start()
    result = handle.get(timeout_ms=GET_MS).unwrap()
    assert statuses(handle) == {
        "cond_src": C,
        "cond_other": C,
        "skip_wins": S,  # skip_when True wins over run_when True
        "run_false": S,
        "after_skip": S,  # a condition skip cascades like any skip
        "run_true": C,  # no workflow_ctx_from: the condition saw its dependency
        "skip_false": C,
        "raises": S,  # a raising condition skips the node
        "ctx_from": C,  # with workflow_ctx_from the condition sees only those nodes
        "root_skipped": S,  # root conditions are evaluated
        "root_runs": C,  # ... with an empty context
    }
    # Sinks only; a SKIPPED sink maps to None.
    assert {key: None if r is None else r.unwrap() for key, r in result.items()} == {
        "skip_wins": None,
        "after_skip": None,
        "run_true": "ran",
        "skip_false": "ran",
        "raises": None,
        "ctx_from": {
            "workflow_id": handle.workflow_id,
            "task_index": 8,
            "task_name": "wfp.ctx",
            "seen": {"cond_src": None, "cond_other": ok_picture(6)},
            "by_node_object": None,
        },
        "root_skipped": None,
        "root_runs": "ran",
    }


# -- success policy --------------------------------------------------------------------------------


def test_success_policy_satisfied_case_completes_despite_a_failed_node(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = wf.PolicySatisfiedWorkflow.build(app).start()
    result = handle.get(timeout_ms=GET_MS).unwrap()
    assert handle.status() is WorkflowStatus.COMPLETED
    assert statuses(handle) == {"a": C, "bad": F, "c": C}
    assert set(result) == {"bad", "c"}
    assert result["c"].unwrap() == 3
    assert error_of(result["bad"]).message == "tolerated"


def test_success_policy_failed_reports_lowest_index_failed_required_node(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = wf.PolicyFailedWorkflow.build(app).start()
    error = error_of(handle.get(timeout_ms=GET_MS))
    # z failed last (after y), but y has the lowest index among the cases' failed required nodes.
    assert (error.error_code, error.message) == ("BOOM", "y failed first")
    assert statuses(handle) == {"x": C, "y": F, "z": F}
    rows = db.nodes(handle.workflow_id)
    assert rows["z"]["completed_at"] > rows["y"]["completed_at"]


def test_success_policy_not_met_without_a_failed_required_node(
    worker: WorkerProcess, app: Horsies
) -> None:
    handle = wf.PolicyNotMetWorkflow.build(app).start()
    error = error_of(handle.get(timeout_ms=GET_MS))
    assert error.error_code == LibraryErrorCode.WORKFLOW_SUCCESS_CASE_NOT_MET
    assert error.message == "No success case was satisfied"
    assert handle.status() is WorkflowStatus.FAILED
    assert statuses(handle) == {"p": C, "q": F, "r": S}


# -- node options ----------------------------------------------------------------------------------


def test_queue_and_priority_overrides_reach_the_task_rows(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    handle = wf.QueueOverrideWorkflow.build(app).start()
    handle.get(timeout_ms=GET_MS).unwrap()
    rows = db.nodes(handle.workflow_id)
    expected = {
        "plain": ("main", wf.MAIN_PRIORITY),
        "override": ("alt", 7),
        "queue_only": ("alt", wf.ALT_PRIORITY),
    }
    for node_id, (queue, priority) in expected.items():
        task = db.task(rows[node_id]["task_id"])
        assert (task["queue_name"], task["priority"]) == (queue, priority), node_id
        assert task["status"] == "COMPLETED"
        assert (rows[node_id]["queue_name"], rows[node_id]["priority"]) == (queue, priority)


def test_node_good_until_overrides_the_task_option(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    expired_at = now - timedelta(minutes=1)
    later_at = now + timedelta(hours=1)
    expired = TaskNode(fn=wf.expiring, args=("expired",), good_until=expired_at, node_id="expired")
    plain = TaskNode(fn=wf.expiring, args=("plain",), node_id="plain")
    later = TaskNode(fn=wf.expiring, args=("later",), good_until=later_at, node_id="later")
    handle = app.workflow("wfp_good_until", [expired, plain, later]).start()
    try:
        wait_node(handle, "plain", C)
        wait_node(handle, "later", C)
        # Another workflow goes through afterwards: the worker kept claiming meanwhile.
        wf.MetaWorkflow.build(app).start().get(timeout_ms=GET_MS).unwrap()
        rows = db.nodes(handle.workflow_id)
        tasks = {node_id: db.task(rows[node_id]["task_id"]) for node_id in rows}
        assert tasks["expired"]["good_until"] == expired_at
        assert tasks["plain"]["good_until"] == wf.DECORATOR_GOOD_UNTIL
        assert tasks["later"]["good_until"] == later_at
        assert tasks["expired"]["status"] == "PENDING"
        assert tasks["expired"]["claimed_at"] is None
        assert statuses(handle)["expired"] is WorkflowTaskStatus.ENQUEUED
        assert handle.status() is WorkflowStatus.RUNNING
    finally:
        handle.cancel()


def test_retried_node_stays_running_across_attempts(
    worker: WorkerProcess, app: Horsies, db: Db, gate: Gate, tmp_path: Path
) -> None:
    flaky = TaskNode(
        fn=wf.flaky,
        kwargs={"attempts_path": str(tmp_path / "attempts"), "gate_path": str(gate.path)},
        node_id="flaky",
    )
    after = TaskNode(fn=wf.value, args=("after",), waits_for=[flaky], node_id="after")
    handle = app.workflow("wfp_retry", [flaky, after]).start()
    task_id = db.nodes(handle.workflow_id)["flaky"]["task_id"]
    wait_until(lambda: db.task(task_id)["retry_count"] == 1, WAIT_S, "the first retry")
    # The first attempt's err is not the node's result: the node waits for the final attempt.
    assert statuses(handle) == {
        "flaky": WorkflowTaskStatus.RUNNING,
        "after": WorkflowTaskStatus.PENDING,
    }
    assert handle.status() is WorkflowStatus.RUNNING
    assert error_of(handle.result_for(flaky)).error_code == LibraryErrorCode.RESULT_NOT_READY
    gate.open()
    result = handle.get(timeout_ms=GET_MS).unwrap()
    assert result["after"].unwrap() == "after"
    assert handle.result_for(flaky).unwrap() == 2
    assert statuses(handle) == {"flaky": C, "after": C}
    row = db.task(task_id)
    assert (row["status"], row["retry_count"]) == ("COMPLETED", 1)
