"""A task that forks and then dies: its child process's death must be seen at once, whatever the
descendant it left behind keeps open.

The task starts a long-lived descendant (``os.fork()``, or a ``multiprocessing`` pool with the fork
start method) and exits hard. The descendant inherits the child's descriptors, so a worker that
learns of a death only from end-of-file on a pipe would wait for the descendant too (a minute
here): the task stays RUNNING, kept alive by the worker's heartbeats, and the slot stays taken.

What it proves: the task fails with ``WORKER_CRASHED`` within a few seconds (the child's death,
not the reaper), the worker replaces the child and keeps running tasks, and it reports the
descendant the dead child left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import StartWorker
from tests.reliability.workload import send_load, task_states, wait_terminal

pytestmark = pytest.mark.timeout(120)

DETECT_BOUND_S = 10.0
"""Far below the descendant's minute; the reaper never acts while the worker heartbeats."""


@contextlib.contextmanager
def descendant_ended(pid_file: Path) -> Iterator[None]:
    """At the end, SIGKILL the descendant whose pid the task wrote (if it is still there)."""
    try:
        yield
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("how", ["fork", "pool"])
def test_a_child_that_forks_then_dies_is_seen_at_once(
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
    tmp_path: Path,
    how: str,
) -> None:
    env = {"RELIABILITY_HARD_CAP": "1"}
    app = make_producer(env)
    worker = start_worker("--processes", "2", env=env)
    pid_file = tmp_path / "descendant.pid"
    with descendant_ended(pid_file):
        task_id = app.tasks["rel.fork_and_die"].send("forker", how, str(pid_file)).task_id
        wait_until(pid_file.exists, 30, "the task to start its descendant")
        descendant = int(pid_file.read_text())
        died_at = time.monotonic()
        wait_until(
            lambda: task_states(ledger, [task_id])[task_id].status == "FAILED",
            DETECT_BOUND_S,
            "the task to fail through its child's death",
            interval=0.02,
        )
        detect_s = time.monotonic() - died_at
        state = task_states(ledger, [task_id])[task_id]
        assert state.result is not None
        assert '"WORKER_CRASHED"' in state.result, state
        # The worker keeps its capacity: two tasks after the crash run and finish.
        ids = send_load(app, "rel.work", [("after-1", 0.2), ("after-2", 0.2)])
        wait_terminal(ledger, ids, 30)
        assert {task_states(ledger, ids.values())[i].status for i in ids.values()} == {"COMPLETED"}
        wait_until(
            lambda: "orphan" in worker.output() and str(descendant) in worker.output(),
            10,
            "the descendant left running to be reported",
        )
        print(f"[rel-fork:{how}] detect_s={detect_s:.2f} descendant={descendant}")
    assert worker.alive
