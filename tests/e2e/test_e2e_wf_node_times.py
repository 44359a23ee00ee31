"""`WorkflowTaskInfo.started_at` / `completed_at` against a real ``horsies worker`` (2 children).

A node's ``started_at`` is when its task started running (its task row's ``started_at``), so it
comes strictly after every dependency completed, even when one worker exchange finishes a node and
starts the next; a retried node reports its latest attempt. A node that never ran (pending,
enqueued but not started, skipped, cancelled before it started) has neither time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2e_harness import Db, WorkerProcess, producer_app, wait_until, worker_fixture
from horsies import Horsies, TaskNode, WorkflowHandle, WorkflowTaskInfo, WorkflowTaskStatus
from node_status_letters import C, E, F, S
from wf_apps import wf_patterns as wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GET_MS = 30_000
WAIT_S = 30.0


app = producer_app(wf.make_app)


worker = worker_fixture("wf_patterns", "--processes", "2")


@pytest.fixture
def gate_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gate"
    yield path
    path.touch()  # never leave a worker child blocked on a failed test's gate


def infos(handle: WorkflowHandle) -> dict[str, WorkflowTaskInfo]:
    return {str(t.node_id): t for t in handle.tasks()}


def assert_never_ran(info: WorkflowTaskInfo) -> None:
    assert (info.started_at, info.completed_at) == (None, None), info


def test_each_link_of_a_chain_starts_after_the_previous_one_completed(
    worker: WorkerProcess, app: Horsies, db: Db
) -> None:
    links: list[TaskNode[int]] = []
    for i in range(4):
        previous = links[-1:]
        links.append(TaskNode(fn=wf.value, args=(i,), waits_for=list(previous), node_id=f"n{i}"))
    handle = app.workflow("wfp_times_chain", links).start()
    assert handle.get(timeout_ms=GET_MS).is_ok()

    nodes = infos(handle)
    rows = db.nodes(handle.workflow_id)
    for node_id, info in nodes.items():
        assert info.status is C
        assert info.started_at is not None, node_id
        assert info.completed_at is not None, node_id
        assert info.started_at < info.completed_at, node_id
        task = db.task(rows[node_id]["task_id"])
        assert info.started_at >= task["started_at"], node_id
    for before, after in itertools.pairwise(links):
        done = nodes[str(before.node_id)].completed_at
        started = nodes[str(after.node_id)].started_at
        assert done is not None
        assert started is not None
        assert started > done, (before.node_id, after.node_id)


def test_skipped_nodes_have_no_times(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    handle = wf.CascadeWorkflow.build(app).start()
    assert handle.get(timeout_ms=GET_MS).is_err()
    nodes = infos(handle)
    assert {k: v.status for k, v in nodes.items()} == {
        "ok": C,
        "bad": F,
        "mid": S,
        "end": S,
        "side": C,
    }
    for node_id in ("ok", "bad", "side"):
        assert nodes[node_id].started_at is not None, node_id
        assert nodes[node_id].completed_at is not None, node_id
    assert_never_ran(nodes["mid"])
    assert_never_ran(nodes["end"])
    rows = db.nodes(handle.workflow_id)
    assert (rows["mid"]["started_at"], rows["mid"]["completed_at"]) == (None, None)


def test_a_node_that_never_started_has_no_times_also_once_cancelled(
    worker: WorkerProcess, app: Horsies
) -> None:
    expired_at = datetime.now(UTC) - timedelta(minutes=1)
    # An expired task is never claimed: its node stays ENQUEUED.
    expired = TaskNode(fn=wf.expiring, args=("x",), good_until=expired_at, node_id="expired")
    later = TaskNode(fn=wf.value, args=(1,), waits_for=[expired], node_id="later")
    handle = app.workflow("wfp_times_unstarted", [expired, later]).start()
    wf.MetaWorkflow.build(app).start().get(timeout_ms=GET_MS).unwrap()  # the worker is claiming
    nodes = infos(handle)
    assert nodes["expired"].status is E
    assert_never_ran(nodes["expired"])
    assert_never_ran(nodes["later"])

    handle.cancel()
    nodes = infos(handle)
    assert (nodes["expired"].status, nodes["later"].status) == (S, S)
    assert_never_ran(nodes["expired"])
    assert_never_ran(nodes["later"])


def test_a_retried_node_reports_the_start_of_its_latest_attempt(
    worker: WorkerProcess, app: Horsies, db: Db, gate_path: Path, tmp_path: Path
) -> None:
    flaky = TaskNode(
        fn=wf.flaky,
        kwargs={"attempts_path": str(tmp_path / "attempts"), "gate_path": str(gate_path)},
        node_id="flaky",
    )
    handle = app.workflow("wfp_times_retry", [flaky]).start()
    task_id = db.nodes(handle.workflow_id)["flaky"]["task_id"]
    wait_until(lambda: db.task(task_id)["retry_count"] == 1, WAIT_S, "the first retry")
    gate_path.touch()
    assert handle.get(timeout_ms=GET_MS).is_ok()

    info = infos(handle)["flaky"]
    task = db.task(task_id)
    assert info.status is C
    assert info.started_at == task["started_at"]
    # The second attempt could not start before its retry was due; the first started before that.
    assert info.started_at is not None
    assert info.started_at >= task["next_retry_at"]
    assert info.completed_at is not None
    assert info.started_at < info.completed_at


def test_pending_node_waits_with_no_times(
    worker: WorkerProcess, app: Horsies, gate_path: Path
) -> None:
    gate = TaskNode(fn=wf.gate, kwargs={"path": str(gate_path)}, node_id="gate")
    after = TaskNode(fn=wf.value, args=(2,), waits_for=[gate], node_id="after")
    handle = app.workflow("wfp_times_pending", [gate, after]).start()
    wait_until(
        lambda: infos(handle)["gate"].status is WorkflowTaskStatus.RUNNING, WAIT_S, "gate running"
    )
    nodes = infos(handle)
    assert nodes["gate"].started_at is not None
    assert nodes["gate"].completed_at is None
    assert_never_ran(nodes["after"])
    gate_path.touch()
    assert handle.get(timeout_ms=GET_MS).is_ok()
