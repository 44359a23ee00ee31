"""Concurrency of the workflow engine with two real workers (two children each), run many times.

Every advance of a workflow tree serialises on its root row's lock,
so: two dependencies finishing at the same moment enqueue their dependent exactly once; a pause
racing completions loses no node; a cancel racing completions stays CANCELLED.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from e2e_harness import Db, StartWorker, WorkerProcess, error_of, producer_app, wait_until
from horsies.app import Horsies
from horsies.results import LibraryErrorCode
from horsies.workflows.status import WorkflowStatus
from wf_control_harness import GET_MS, Gates, wf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROUNDS = 24
LATTICE = ("r0", "r1", "r2", "r3", "m0", "m1", "final")


app = producer_app(wf.create_app)


@pytest.fixture(scope="module")
def workers(start_worker: StartWorker, app: Horsies) -> list[WorkerProcess]:
    del app  # the producer creates the schema before the workers start
    started = [start_worker("wf_control", "--processes", "2", ready=False) for _ in range(2)]
    for worker in started:
        worker.wait_ready()
    return started


def until_completed(db: Db, workflow_id: str, count: int) -> Callable[[], bool]:
    """A wait condition: at least ``count`` nodes COMPLETED."""

    def check() -> bool:
        return sum(s == "COMPLETED" for s in db.node_statuses(workflow_id).values()) >= count

    return check


def settled(db: Db, workflow_id: str) -> Callable[[], bool]:
    """A wait condition: no node ENQUEUED or RUNNING."""
    return lambda: db.no_active_nodes(workflow_id)


def occupy_one_child_per_worker(app: Horsies, db: Db, gates: Gates) -> None:
    """Leave each of the two workers exactly one idle child, by parking a gate on the other.

    Then two tasks sent together must run on different workers. A worker that got two gates
    gets one released; with four children, three gates always reach both workers.
    """
    by_worker: dict[str, list[Gates]] = {}
    for attempt in range(3):
        run = gates.sub(f"hog{attempt}")
        handle = wf.Gates.build_with(app, gates_dir=run.path, names=("hog",), join=False).start()
        task_id = db.wait_node(handle.workflow_id, "hog", "RUNNING")["task_id"]
        owner = db.wait_status(task_id, "RUNNING")["claimed_by_worker_id"]
        by_worker.setdefault(owner, []).append(run)
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2, by_worker
    for runs in by_worker.values():
        for run in runs[1:]:
            run.release("hog")
    wait_until(
        lambda: len(db.query("SELECT 1 FROM horsies_tasks WHERE status = 'RUNNING'")) == 2,
        30,
        "exactly two parked gates",
    )


def test_two_dependencies_ending_together_enqueue_their_join_once(
    workers: list[WorkerProcess], app: Horsies, db: Db, gates: Gates
) -> None:
    occupy_one_child_per_worker(app, db, gates)
    for round_ in range(ROUNDS):
        run = gates.sub(f"round{round_}")
        handle = wf.RaceJoin.build_with(app, gates_dir=run.path).start()
        run.wait_started("left", "right")
        rows = db.workflow_tasks(handle.workflow_id)
        # Each worker has one free child: the two dependencies run on different workers.
        assert len({r["claimed_by_worker_id"] for r in rows}) == 2, rows
        # One file releases both gates: the two workers finish within a few milliseconds.
        run.release("both")
        result = handle.get(timeout_ms=GET_MS)
        assert handle.status() is WorkflowStatus.COMPLETED, (round_, result)
        rows = db.workflow_tasks(handle.workflow_id)
        assert sorted(r["task_name"] for r in rows) == ["wfc.gate", "wfc.gate", "wfc.record"]
        assert run.runs("join") == 1, round_
        assert (run.runs("left"), run.runs("right")) == (1, 1)
        # Enqueued by the completion of the later dependency itself (same transaction), not
        # later by the reaper's reconciliation (which waits for a workflow quiet for 1 s).
        finished = max(r["completed_at"] for r in rows if r["task_name"] == "wfc.gate")
        (join,) = [r for r in rows if r["task_name"] == "wfc.record"]
        assert (join["sent_at"] - finished).total_seconds() < 0.5, (round_, rows)
        assert db.node_statuses(handle.workflow_id) == {
            "left": "COMPLETED",
            "right": "COMPLETED",
            "join": "COMPLETED",
        }


def test_pause_racing_completions_loses_no_node(
    workers: list[WorkerProcess], app: Horsies, db: Db, gates: Gates
) -> None:
    paused_rounds = 0
    for round_ in range(ROUNDS):
        run = gates.sub(f"round{round_}")
        handle = wf.Lattice.build_with(app, runs_dir=run.path).start()
        wid = handle.workflow_id
        # Pause at a different point of the run each round.
        threshold = round_ % len(LATTICE)
        reached = until_completed(db, wid, threshold)
        wait_until(reached, 30, f"{threshold} nodes done", interval=0.005)
        if handle.pause():
            paused_rounds += 1
            # Already enqueued tasks may still run after a pause; once they are done nothing moves.
            wait_until(settled(db, wid), 30, "in-flight nodes to finish")
            assert handle.status() is WorkflowStatus.PAUSED, round_
            statuses = db.node_statuses(wid)
            started = [n for n, s in statuses.items() if s != "PENDING"]
            assert all(statuses[n] == "COMPLETED" for n in started), statuses
            assert len(db.workflow_tasks(wid)) == len(started), (round_, statuses)
            assert handle.resume() is True
        result = handle.get(timeout_ms=GET_MS)
        assert handle.status() is WorkflowStatus.COMPLETED, (round_, result)
        assert result.unwrap() == "final"
        assert set(db.node_statuses(wid).values()) == {"COMPLETED"}, round_
        assert len(db.workflow_tasks(wid)) == len(LATTICE)
        assert [run.runs(name) for name in LATTICE] == [1] * len(LATTICE), round_
    assert paused_rounds >= ROUNDS // 2


def test_cancel_racing_completions_stays_cancelled(
    workers: list[WorkerProcess], app: Horsies, db: Db, gates: Gates
) -> None:
    for round_ in range(ROUNDS):
        run = gates.sub(f"round{round_}")
        # The final node is a gate: the workflow cannot complete before the cancel.
        handle = wf.Lattice.build_with(app, runs_dir=run.path, gated_final=True).start()
        wid = handle.workflow_id
        # Cancel at a different point of the run each round.
        threshold = round_ % (len(LATTICE) - 1)
        wait_until(until_completed(db, wid, threshold), 30, f"{threshold} nodes done")

        handle.cancel()

        assert handle.status() is WorkflowStatus.CANCELLED, round_
        # Tasks already running are stopped (or their results win the race); either way their
        # ends change nothing.
        run.release("final")
        wait_until(settled(db, wid), 30, "running nodes to end")
        assert handle.status() is WorkflowStatus.CANCELLED, round_
        assert error_of(handle.get(timeout_ms=GET_MS)).error_code == (
            LibraryErrorCode.WORKFLOW_CANCELLED
        )
        assert db.workflow(wid)["result"] is None
        statuses = db.node_statuses(wid)
        assert set(statuses.values()) <= {"COMPLETED", "SKIPPED", "FAILED"}, statuses
        rows = db.workflow_tasks(wid)
        assert {r["status"] for r in rows} <= {"COMPLETED", "CANCELLED"}, rows
        completed = [n for n, s in statuses.items() if s == "COMPLETED"]
        assert sum(r["status"] == "COMPLETED" for r in rows) == len(completed)
        # A FAILED node is a task stopped while it ran: its row is CANCELLED, never retried.
        stopped = [n for n, s in statuses.items() if s == "FAILED"]
        assert sum(r["status"] == "CANCELLED" and r["started_at"] is not None for r in rows) == (
            len(stopped)
        ), rows
        assert all(run.runs(name) <= 1 for name in LATTICE), round_
