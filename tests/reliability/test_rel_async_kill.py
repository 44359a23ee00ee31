"""Async tasks under kills: SIGKILL to a child running many ``async def`` tasks at once (in each
claim mode: the default, prefetch, and under cluster-wide caps), and to a whole worker doing so
(``--processes 2 --async-concurrency 10``).

What it proves, from the ledger and the task table:

- the child runs its async tasks side by side (the ledger shows them overlap on one pid);
- when it dies, every task it was running is handled as a crashed task is: retried per policy
  (``rel.async_retried``, ``auto_retry_for=[WORKER_CRASHED]``) and then completed, each task
  ending once; no other task is touched; the worker lives on;
- when the whole worker dies, another worker's reaper recovers its async tasks the same way;
- lost 0, duplicated 0.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import StartWorker
from tests.reliability.ledger import compare, ledger_rows
from tests.reliability.workload import (
    intervals,
    max_overlap,
    ran_in_child,
    send_load,
    task_states,
    wait_terminal,
)

pytestmark = pytest.mark.timeout(180)

HARD_CAP = {"RELIABILITY_HARD_CAP": "1"}
MODES = {
    "direct": HARD_CAP,
    "prefetch": {},
    # Caps high enough that a child fills up: the point is the kill, not the cap.
    "capped": {
        **HARD_CAP,
        "RELIABILITY_QUEUE_MODE": "custom",
        "RELIABILITY_QUEUE_MAX": "100",
        "RELIABILITY_CLUSTER_CAP": "100",
    },
}
WORKER_ARGS = ("--processes", "2", "--async-concurrency", "10")


def _busiest_child(ledger: str, keys: set[str], at_least: int) -> tuple[int, set[str]]:
    """Wait until one child has started ``at_least`` of ``keys`` without ending them; its pid
    and the keys it runs."""

    def busiest() -> tuple[int, set[str]] | None:
        running: dict[int, set[str]] = {}
        for row in ledger_rows(ledger):
            if row.key not in keys:
                continue
            held = running.setdefault(row.child_pid, set())
            if row.phase == "start":
                held.add(row.key)
            else:
                held.discard(row.key)
        pid, held = max(running.items(), key=lambda item: len(item[1]), default=(0, set[str]()))
        return (pid, held) if len(held) >= at_least else None

    return wait_until(busiest, 60, f"a child running {at_least} async tasks")


@pytest.mark.parametrize("mode", list(MODES))
def test_a_killed_child_takes_only_its_async_tasks_down_and_they_are_retried(
    mode: str, ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    env = MODES[mode]
    app = make_producer(env)
    worker = start_worker(*WORKER_ARGS, env=env)
    ids = send_load(app, "rel.async_retried", [(f"nap{i}", 3.0) for i in range(16)])
    pid, victims = _busiest_child(ledger, set(ids), at_least=5)
    os.kill(pid, signal.SIGKILL)
    ids |= send_load(app, "rel.async_retried", [(f"after{i}", 0.5) for i in range(20)])
    wait_terminal(ledger, ids, 120)
    assert worker.alive, worker.output()

    report = compare(ledger, ids)
    states = task_states(ledger, ids.values())
    rows = ledger_rows(ledger)
    # Every task the killed child had started and not ended, including any it started between the
    # look above and the kill (a busy machine leaves time for that).
    on_killed = [r for r in rows if r.child_pid == pid and r.key in ids]
    ended_there = {r.key for r in on_killed if r.phase == "end"}
    victims |= {r.key for r in on_killed if r.phase == "start" and r.key not in ended_there}
    # The tasks written to the killed child's pipe: each was running there (an async task begins
    # when its child reads it), even one killed before its first line wrote to the ledger.
    by_id = {task_id: key for key, task_id in ids.items()}
    in_killed = {by_id[t] for t in ran_in_child(ledger, ids.values(), pid)}
    assert victims <= in_killed, victims - in_killed
    victims = in_killed
    overlap = max_overlap(intervals(rows, [k for k in ids if k.startswith("after")]))
    print(
        f"\n[rel-async-kill:child:{mode}] tasks={len(ids)} killed_child_ran={len(victims)} "
        f"overlap_after={overlap} statuses={dict(report.statuses)} "
        f"lost={report.lost} duplicated={report.duplicated}"
    )
    report.assert_nothing_lost_or_duplicated()
    assert set(report.statuses) == {"COMPLETED"}, report.summary()
    for key in victims:
        # Its run on the killed child never ended; the retry did, once.
        assert states[ids[key]].retry_count >= 1, (key, states[ids[key]])
        assert report.ends[key] == 1, key
    untouched = [k for k in ids if k not in victims and k.startswith("nap")]
    assert all(states[ids[k]].retry_count == 0 for k in untouched)
    assert overlap > 2  # after the kill the worker again runs async tasks side by side


def test_a_killed_worker_s_async_tasks_are_recovered_by_another(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    app = make_producer(HARD_CAP)
    doomed = start_worker(*WORKER_ARGS, env=HARD_CAP)
    ids = send_load(app, "rel.async_retried", [(f"nap{i}", 3.0) for i in range(12)])
    _busiest_child(ledger, set(ids), at_least=4)
    doomed.kill_group()
    start_worker(*WORKER_ARGS, env=HARD_CAP)
    wait_terminal(ledger, ids, 150)

    report = compare(ledger, ids)
    print(
        f"\n[rel-async-kill:worker] tasks={len(ids)} statuses={dict(report.statuses)} "
        f"lost={report.lost} duplicated={report.duplicated}"
    )
    report.assert_nothing_lost_or_duplicated()
    assert set(report.statuses) == {"COMPLETED"}, report.summary()
