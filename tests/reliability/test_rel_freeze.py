"""Freezes: a worker stopped with SIGSTOP past the stale thresholds while the reaper, ``retry()``
and other workers act on its tasks, then continued with SIGCONT.

A frozen worker is the hardest kind of death to handle: unlike a killed one it comes back, with
children that finish what they were running and a main process that tries to write their
outcomes. Every attempt carries its own fencing token (``attempt``, set when the task is claimed),
so whatever the frozen worker writes for an attempt that was replaced changes nothing.

What it proves, from the ledger and the task table:

- the result stored is the newest attempt's, never the frozen one's, and ``get()`` returns it;
- the frozen attempt's late write is refused and logged (``task_finish_lost``);
- in prefetch mode, a claim whose lease expired while it waited in the worker is never started
  twice, not even by the same worker;
- under load with two workers, in both modes: nothing lost or finished twice, and every stored
  result is the newest attempt's.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator

import pytest
from db_rows import sql
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from process_harness import wait_until

from tests.reliability.harness import LedgerWorker, StartWorker
from tests.reliability.ledger import LedgerReport, LedgerRow, compare, ledger_rows
from tests.reliability.workload import held_by, send_load, task_states, wait_terminal, worker_id

pytestmark = pytest.mark.timeout(180)

STALE_MS = 4_000
FREEZE_ENV = {"RELIABILITY_STALE_MS": str(STALE_MS)}
"""Stale after 4 s: longer than the heartbeat gaps of a busy shared machine."""


@contextlib.contextmanager
def frozen(worker: LedgerWorker) -> Iterator[None]:
    """The worker's whole process group stopped (SIGSTOP) inside the block, continued after it."""
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.pid, signal.SIGCONT)


def _rows(ledger: str, key: str, phase: str) -> list[LedgerRow]:
    """Ledger rows of ``phase`` whose key is ``key``, or starts with it when it ends with "-"."""
    return [
        row
        for row in ledger_rows(ledger)
        if row.phase == phase
        and (row.key == key or (key.endswith("-") and row.key.startswith(key)))
    ]


def _all_completed(ledger: str, ids: dict[str, str], *, timeout: float) -> LedgerReport:
    """Wait for every task of ``ids`` to end; each COMPLETED, nothing lost or finished twice."""
    wait_terminal(ledger, ids, timeout)
    report = compare(ledger, ids)
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses == {"COMPLETED": len(ids)}, report.summary()
    return report


@pytest.mark.parametrize("hard_cap", ["1", "0"], ids=["hard-cap", "prefetch"])
def test_a_frozen_attempt_never_overwrites_the_retry_that_replaced_it(
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
    hard_cap: str,
) -> None:
    env = {**FREEZE_ENV, "RELIABILITY_HARD_CAP": hard_cap}
    producer = make_producer(env)
    worker = start_worker("--processes", "2", env=env)
    handle = producer.tasks["rel.whoami"].send("frozen", 8.0)
    wait_until(lambda: _rows(ledger, "frozen", "start"), 30, "the first attempt to start")
    broker = producer.get_broker()
    with frozen(worker):
        # What a reaper elsewhere does while the worker cannot heartbeat, then an operator's retry.
        wait_until(
            lambda: broker.mark_stale_tasks_as_failed_sync(STALE_MS),
            30,
            "the frozen run to be failed as stale",
        )
        assert handle.retry()
    # Continued: the retry starts on the idle child; the frozen attempt ends about 8 s after it
    # began, while the retry still runs.
    wait_until(lambda: len(_rows(ledger, "frozen", "end")) == 2, 60, "both attempts to end")
    result = handle.get(timeout_ms=30_000)
    newest = _rows(ledger, "frozen", "start")[1]
    assert result.is_ok(), result
    assert result.ok_value == f"frozen:{newest.child_pid}", "an older attempt's result was stored"
    wait_until(lambda: "task_finish_lost" in worker.output(), 10, "the refused write to be logged")


def test_an_expired_claim_waiting_in_a_prefetching_worker_runs_once(
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
) -> None:
    """Both children busy for 2.5 s, one more task claimed behind them with a 1 s lease. Once the
    lease has expired, the worker's next claim pass takes the oldest claimable row, which is its own
    expired claim: it holds that task twice. When both children free up at once, both copies reach
    one start: the task must still run exactly once."""
    env = {"RELIABILITY_CLAIM_LEASE_MS": "1000"}
    producer = make_producer(env)
    worker = start_worker("--processes", "2", env=env)
    ids = send_load(producer, "rel.work", [("long-1", 3.0), ("long-2", 3.0), ("waiting", 0.0)])
    wait_until(lambda: len(_rows(ledger, "long-", "start")) == 2, 30, "both children to be busy")
    # The worker's own claim passes take the oldest claimable row, its own expired claim, again.
    wait_until(
        lambda: sql(
            ledger,
            "SELECT 1 FROM horsies_tasks WHERE id = %s AND status = 'CLAIMED' AND attempt >= 2",
            (ids["waiting"],),
        ),
        30,
        "the worker to claim the waiting task a second time",
    )
    report = _all_completed(ledger, ids, timeout=60)
    assert all(report.starts[key] == 1 for key in ids), report.summary()
    assert worker.alive


@pytest.mark.parametrize("hard_cap", ["1", "0"], ids=["hard-cap", "prefetch"])
def test_a_worker_frozen_under_load_never_stores_an_older_attempts_result(
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
    hard_cap: str,
) -> None:
    """Two workers under load; one is frozen until the other's reaper (2 s thresholds) has retried
    what it ran and requeued what it claimed, then continued. Every task completes once per
    attempt, and the result stored is always the newest attempt's."""
    env = {"RELIABILITY_HARD_CAP": hard_cap}
    producer = make_producer(env)
    victim = start_worker("--processes", "2", env=env)
    start_worker("--processes", "2", env=env)
    calls = [(f"t{i}", 1.5 if i % 4 == 0 else 0.2) for i in range(40)]
    ids = send_load(producer, "rel.whoami_retried", calls)
    victim_id = worker_id(victim)
    wait_until(lambda: held_by(ledger, victim_id)["RUNNING"], 30, "the victim to run a task")
    with frozen(victim):
        wait_until(
            lambda: not any(held_by(ledger, victim_id).values()),
            30,
            "the other worker to take over the victim's tasks",
        )
    _all_completed(ledger, ids, timeout=90)
    rows = ledger_rows(ledger)
    states = task_states(ledger, ids.values())
    retried = 0
    for key, task_id in ids.items():
        newest = [row for row in rows if row.key == key and row.phase == "start"][-1]
        result = states[task_id].result
        assert result is not None
        assert task_result_from_json(result).unwrap() == f"{key}:{newest.child_pid}", key
        retried += states[task_id].retry_count > 0
    assert retried >= 1  # the freeze really replaced at least one attempt
    print(f"[rel-freeze-load:{hard_cap}] tasks={len(ids)} retried_after_freeze={retried}")
