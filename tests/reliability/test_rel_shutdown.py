"""Scenario 5, graceful shutdown under load: SIGTERM to a prefetching worker (``--processes 2``,
``prefetch_buffer`` 2) while it runs two tasks and holds claimed-but-unstarted ones, with a second
worker serving the same queue (claims not started are released at once and the results of the
running tasks are written, so the other worker takes over without waiting for a reaper).

What it proves:

- the worker exits with status 0 within its shutdown timeout;
- the tasks it was running finish on it: their ledger ``end`` rows come from its children and their
  rows are COMPLETED by the time it has exited (not left RUNNING for a reaper);
- its unstarted claims went back to PENDING at once (it holds no row after exiting, long before
  a reaper could requeue them) and then ran exactly once on the other worker, never on it;
- nothing is lost or run twice.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import StartWorker
from tests.reliability.ledger import compare, ledger_rows
from tests.reliability.workload import held_by, send_load, task_states, wait_terminal, worker_id

pytestmark = pytest.mark.timeout(120)

SHUTDOWN_TIMEOUT_S = 10.0
EXIT_SLACK_S = 5.0


def test_sigterm_under_load_finishes_running_and_releases_claims(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    """SIGTERM while running 2 and holding claims: running finish, claims run once elsewhere."""
    app = make_producer()
    args = ("--processes", "2", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S))
    stopping = start_worker(*args, ready=False)
    other = start_worker(*args, ready=False)
    stopping_id, other_id = worker_id(stopping), worker_id(other)
    ids = send_load(app, "rel.work", [(f"l{i}", 0.8) for i in range(8)])
    ids |= send_load(app, "rel.work", [(f"s{i}", 0.02) for i in range(30)])
    key_of = {task_id: key for key, task_id in ids.items()}

    held = wait_until(
        lambda: (h := held_by(ledger, stopping_id))["CLAIMED"] and len(h["RUNNING"]) == 2 and h,
        30,
        "the worker to run 2 tasks and hold claims",
        interval=0.01,
    )
    stopping.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    returncode = stopping.wait_exit(SHUTDOWN_TIMEOUT_S + EXIT_SLACK_S)
    exit_s = time.monotonic() - signalled
    left = held_by(ledger, stopping_id)
    after_exit = task_states(ledger, ids.values())
    wait_terminal(ledger, ids, 60)

    report = compare(ledger, ids)
    rows = ledger_rows(ledger)
    log = stopping.output()
    released = re.search(r"Released (\d+) unstarted", log)
    # A task may finish between the snapshot and the signal and the worker start a claimed one:
    # what it started is judged by the ledger, not by the snapshot.
    ran_here = {r.key for r in rows if r.phase == "start" and r.worker_pid == stopping.pid}
    released_keys = [key_of[t] for t in held["CLAIMED"] if key_of[t] not in ran_here]
    print(
        f"[rel-shutdown] tasks={len(ids)} exit_code={returncode} exit_s={exit_s:.2f} "
        f"(timeout {SHUTDOWN_TIMEOUT_S:g}s) running_at_sigterm={len(held['RUNNING'])} "
        f"claimed_at_sigterm={len(held['CLAIMED'])} released={released and released.group(1)} "
        f"statuses={dict(report.statuses)} lost={report.lost} duplicated={report.duplicated}"
    )
    assert returncode == 0, log
    assert exit_s <= SHUTDOWN_TIMEOUT_S + EXIT_SLACK_S
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses == {"COMPLETED": len(ids)}, report.summary()
    for key in ids:
        assert (report.starts[key], report.ends[key]) == (1, 1), key
    # Nothing left behind: no claim for a reaper, no unwritten result.
    assert left == {"CLAIMED": [], "RUNNING": []}, left

    # Everything the stopping worker started, it finished and wrote before exiting.
    assert {key_of[t] for t in held["RUNNING"]} <= ran_here
    for key in ran_here:
        assert after_exit[ids[key]].status == "COMPLETED", (key, after_exit[ids[key]])
        ends = [r.worker_pid for r in rows if r.key == key and r.phase == "end"]
        assert ends == [stopping.pid], (key, ends)
    # Its unstarted claims were released at once and ran on the other worker.
    assert released is not None, log
    assert int(released.group(1)) >= 1
    assert released_keys, "every claim got started before the signal"
    for key in released_keys:
        starts = [r.worker_pid for r in rows if r.key == key and r.phase == "start"]
        assert starts == [other.pid], (key, starts)
        assert task_states(ledger, [ids[key]])[ids[key]].worker_id == other_id
