"""Stops of running tasks when things go wrong (hard-cap worker, heartbeats every second).

What it proves:

- a stop request whose notification never arrives (written straight to the row, as after a
  listener reconnect) is still carried out: the worker's next heartbeat sees it;
- a task whose stop was requested and whose worker then dies is never retried, even with
  ``WORKER_CRASHED`` in its ``auto_retry_for``: the reaper's end of it makes it CANCELLED;
- nothing is lost or finished twice.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import StartWorker
from tests.reliability.ledger import compare, ledger_rows
from tests.reliability.workload import send_load, task_states, wait_terminal

pytestmark = pytest.mark.timeout(120)

HARD_CAP = {"RELIABILITY_HARD_CAP": "1"}


def _request_stop_without_notifying(ledger: str, task_id: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        conn.execute(
            "UPDATE horsies_tasks SET cancel_requested_at = now() WHERE id = %s", (task_id,)
        )


def _started(ledger: str, key: str) -> None:
    wait_until(
        lambda: any(r.key == key and r.phase == "start" for r in ledger_rows(ledger)),
        30,
        f"{key} started",
    )


@pytest.mark.parametrize("task_name", ["rel.work", "rel.async_retried"])
def test_a_stop_whose_notification_was_lost_is_seen_by_the_heartbeat(
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
    task_name: str,
) -> None:
    app = make_producer(HARD_CAP)
    start_worker("--processes", "2", env=HARD_CAP)
    ids = send_load(app, task_name, [("victim", 60.0)])
    _started(ledger, "victim")
    _request_stop_without_notifying(ledger, ids["victim"])
    wait_terminal(ledger, ids, 30)
    state = task_states(ledger, ids.values())[ids["victim"]]
    assert (state.status, state.retry_count) == ("CANCELLED", 0), state
    report = compare(ledger, ids)
    report.assert_nothing_lost_or_duplicated()


def test_a_stopped_task_whose_worker_died_is_cancelled_not_retried(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    app = make_producer(HARD_CAP)
    doomed = start_worker("--processes", "2", env=HARD_CAP)
    ids = send_load(app, "rel.async_retried", [("victim", 60.0)])
    _started(ledger, "victim")
    # The stop is recorded but the worker dies before it acts on it (killed with its children).
    doomed.kill_group()
    _request_stop_without_notifying(ledger, ids["victim"])
    start_worker("--processes", "2", env=HARD_CAP)  # its reaper ends the stale run
    wait_terminal(ledger, ids, 60)
    state = task_states(ledger, ids.values())[ids["victim"]]
    print(f"\n[rel-stop:dead-worker] status={state.status} retry_count={state.retry_count}")
    assert (state.status, state.retry_count) == ("CANCELLED", 0), state
    compare(ledger, ids).assert_nothing_lost_or_duplicated()
