"""Tasks queued in a child behind a long one are never failed as crashed when their worker dies.

In prefetch mode, while tasks are short, a worker hands each child a few tasks at once so that the
child starts the next one the moment the previous one returns. When the running one turns out to
be long, the tasks behind it have not started: the worker takes them back within 10 ms, and if it
is then killed they run exactly once elsewhere, like any claim whose code never started, instead
of ending FAILED with ``WORKER_CRASHED``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import StartWorker
from tests.reliability.ledger import compare, ledger_rows
from tests.reliability.workload import send_load, task_states, wait_terminal

pytestmark = pytest.mark.timeout(120)


def test_tasks_queued_behind_a_long_one_survive_a_killed_worker(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    app = make_producer({})  # prefetch mode
    victim = start_worker("--processes", "1")
    # Short tasks first: the worker learns that tasks are short and starts queueing in its child.
    warm = send_load(app, "rel.work", [(f"warm-{i}", 0.0) for i in range(40)])
    wait_terminal(ledger, warm, 30)
    queued = [f"queued-{i}" for i in range(3)]
    ids = send_load(app, "rel.work", [("long", 30.0), *((key, 0.0) for key in queued)])
    queued_ids = [ids[key] for key in queued]
    wait_until(
        lambda: any(r.key == "long" for r in ledger_rows(ledger)), 30, "the long task to start"
    )
    # The window in which a queued task is RUNNING without having begun is bounded (10 ms): then
    # the worker takes them back. (Without that, they stayed RUNNING for the long task's 30 s.)
    wait_until(
        lambda: all(s.status != "RUNNING" for s in task_states(ledger, queued_ids).values()),
        5,
        "the queued tasks to be taken back",
    )
    victim.kill_group()
    start_worker("--processes", "2")  # its reaper recovers what the victim held
    wait_terminal(ledger, ids, 60)
    states = task_states(ledger, ids.values())
    report = compare(ledger, {key: ids[key] for key in queued})
    assert {key: states[ids[key]].status for key in queued} == dict.fromkeys(queued, "COMPLETED"), (
        report.summary()
    )
    assert all(report.starts[key] == 1 for key in queued), report.summary()
    assert states[ids["long"]].status == "FAILED"
    report.assert_nothing_lost_or_duplicated()
