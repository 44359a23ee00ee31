"""Scenario 2, child killed: SIGKILL to one child process of a ``--processes 2`` worker while it
runs a long task, in hard-cap (direct start) and soft-cap (prefetch) mode.

What it proves:

- the task that child ran ends FAILED with ``WORKER_CRASHED`` (``rel.work``), detected by the worker
  through the child's sentinel (its ``failed_reason`` names the dead child, not the reaper's
  missing-heartbeat text) long before the stale threshold; a task with
  ``auto_retry_for=[WORKER_CRASHED]`` (``rel.stall``) is retried instead and completes;
- no other task is touched: the long task on the other child and the short tasks sent around
  the kills complete, each exactly once;
- the worker lives on with its full capacity: a fresh child replaces the dead one, and afterwards
  the worker again runs ``--processes`` tasks at the same time (overlapping ledger intervals on
  two different children, neither of them a killed one).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.apps.ledger_app import RECOVERY
from tests.reliability.harness import LedgerWorker, StartWorker
from tests.reliability.ledger import compare, ledger_rows
from tests.reliability.workload import intervals, max_overlap, send_load, task_states, wait_terminal

pytestmark = pytest.mark.timeout(120)

PROCESSES = 2


def _child_running(ledger: str, key: str) -> int:
    """Wait for ``key``'s ledger ``start`` row and return the pid of the child running it."""
    found = wait_until(
        lambda: [r for r in ledger_rows(ledger) if r.key == key and r.phase == "start"],
        30,
        f"{key} started",
    )
    return found[0].child_pid


def _kill_child(worker: LedgerWorker, ledger: str, key: str, task_id: str) -> tuple[int, float]:
    """SIGKILL the child running ``key`` (a child of ``worker``); returns its pid and how long the
    task's row took to leave RUNNING."""
    pid = _child_running(ledger, key)
    assert pid != worker.pid
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(
        lambda: task_states(ledger, [task_id])[task_id].status != "RUNNING",
        30,
        f"{key} no longer RUNNING",
        interval=0.02,
    )
    return pid, time.monotonic() - killed_at


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_child_kill_fails_only_its_task_and_keeps_capacity(
    mode: str, ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    """Kill the child of a plain task, then the child of a retried one: only those tasks are hit,
    the worker survives and afterwards runs two tasks at once again."""
    env = {"RELIABILITY_HARD_CAP": "1"} if mode == "hard" else {}
    app = make_producer(env)
    worker = start_worker("--processes", str(PROCESSES), env=env)
    ids = send_load(app, "rel.work", [("crash", 30.0), ("neighbour", 2.0)])
    ids |= send_load(app, "rel.work", [(f"a{i}", 0.01) for i in range(10)])
    crash_pid, crash_detect_s = _kill_child(worker, ledger, "crash", ids["crash"])
    crashed = task_states(ledger, [ids["crash"]])[ids["crash"]]

    # rel.stall: retried on WORKER_CRASHED; its first run stalls 30 s, the retry returns at once.
    ids["retry"] = app.tasks["rel.stall"].send("retry", 0.0, 30.0).task_id
    ids |= send_load(app, "rel.work", [(f"b{i}", 0.01) for i in range(10)])
    retry_pid, retry_detect_s = _kill_child(worker, ledger, "retry", ids["retry"])
    wait_terminal(ledger, ids, 60)

    # Capacity is measured once both dead children are replaced: a fresh child may take seconds
    # to start on a loaded machine, and until then the other child runs the tasks one by one.
    wait_until(lambda: worker.output().count("child_respawned:") >= 2, 60, "both children replaced")
    # Capacity: PROCESSES tasks of 0.5 s each, twice over; the ledger shows them overlap.
    capacity = send_load(app, "rel.work", [(f"c{i}", 0.5) for i in range(2 * PROCESSES)])
    ids |= capacity
    wait_terminal(ledger, ids, 60)
    assert worker.alive, worker.output()

    report = compare(ledger, ids)
    states = task_states(ledger, ids.values())
    runs = intervals(ledger_rows(ledger), capacity)
    overlap = max_overlap(runs)
    children = {run.child_pid for run in runs}
    print(
        f"[rel-child-kill:{mode}] tasks={len(ids)} child_kills=2 "
        f"detect_s=[{crash_detect_s:.2f}, {retry_detect_s:.2f}] "
        f"(reaper threshold {RECOVERY.running_stale_threshold_ms / 1000:g}s) "
        f"crash={crashed.status} retry={states[ids['retry']].status}"
        f"/retry_count={states[ids['retry']].retry_count} "
        f"capacity_overlap={overlap}/{PROCESSES} children_after={sorted(children)} "
        f"statuses={dict(report.statuses)} lost={report.lost} duplicated={report.duplicated}"
    )
    report.assert_nothing_lost_or_duplicated()

    # The plain task failed at once, through the child's death, with the documented code.
    assert crashed.status == "FAILED", crashed
    assert crashed.result is not None
    assert '"WORKER_CRASHED"' in crashed.result, crashed
    assert crashed.failed_reason is not None
    assert f"child process {crash_pid} died" in crashed.failed_reason, crashed
    assert crash_detect_s < RECOVERY.running_stale_threshold_ms / 1000, crash_detect_s
    assert report.ends["crash"] == 0

    # The retried task: one crashed attempt, then a complete one.
    retry = states[ids["retry"]]
    assert (retry.status, retry.retry_count) == ("COMPLETED", 1), retry
    assert (report.starts["retry"], report.ends["retry"]) == (2, 1)

    # Nothing else was touched.
    for key, task_id in ids.items():
        if key in ("crash", "retry"):
            continue
        assert states[task_id].status == "COMPLETED", (key, states[task_id])
        assert (report.starts[key], report.ends[key]) == (1, 1), key

    # Full capacity afterwards, on live children only.
    assert overlap == PROCESSES, runs
    assert all(run.worker_pid == worker.pid for run in runs)
    assert not children & {crash_pid, retry_pid}, children
