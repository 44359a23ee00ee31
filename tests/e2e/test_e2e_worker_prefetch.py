"""Prefetch mode's fast path for short tasks with real workers: children hold a queue of tasks,
one round trip writes results, starts claims, fills free child slots and claims more. Every task
runs exactly once; a child that dies fails only the task it was running, and the tasks queued
behind it run elsewhere (docs/worker.md, "Throughput of short tasks")."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from apps.prefetch import create_app
from e2e_harness import Db, StartWorker, producer_app, wait_until
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

app = producer_app(create_app)


def statuses(db: Db, ids: list[str]) -> Counter[str]:
    rows = db.query("SELECT status FROM horsies_tasks WHERE id = ANY(%s)", (ids,))
    return Counter(r["status"] for r in rows)


def test_two_prefetching_workers_run_every_short_task_exactly_once(
    start_worker: StartWorker, app: Horsies, db: Db, tmp_path: Path
) -> None:
    start_worker("prefetch", "--processes", "2", "--max-claim-batch", "18")
    start_worker("prefetch", "--processes", "2", "--max-claim-batch", "18")
    log = tmp_path / "executions.log"
    n = 1_000
    handles = app.tasks["pf.record"].send_many([(str(log), f"m{i}") for i in range(n)])
    ids = [h.task_id for h in handles]
    wait_until(lambda: statuses(db, ids)["COMPLETED"] == n, 120, "every task to complete")
    assert Counter(log.read_text().split()) == Counter({f"m{i}": 1 for i in range(n)})
    rows = db.query(
        "SELECT started_at, completed_at, claimed_by_worker_id FROM horsies_tasks "
        "WHERE id = ANY(%s)",
        (ids,),
    )
    assert all(r["started_at"] <= r["completed_at"] for r in rows)
    assert len({r["claimed_by_worker_id"] for r in rows}) == 2


def test_a_dead_child_fails_its_task_and_its_queue_runs_elsewhere(
    start_worker: StartWorker, app: Horsies, db: Db, tmp_path: Path
) -> None:
    worker = start_worker("prefetch", "--processes", "2", "--max-claim-batch", "18")
    log = tmp_path / "executions.log"
    record = app.tasks["pf.record"]
    # Short tasks first, so that children queue; then a crash among more of them.
    warm = record.send_many([(str(log), f"w{i}") for i in range(200)])
    wait_until(
        lambda: statuses(db, [h.task_id for h in warm])["COMPLETED"] == 200, 60, "the warm-up"
    )
    before = record.send_many([(str(log), f"b{i}") for i in range(100)])
    crashed = app.tasks["pf.crash"].send()
    after = record.send_many([(str(log), f"a{i}") for i in range(100)])
    ids = [h.task_id for h in [*before, *after]]
    wait_until(lambda: statuses(db, ids)["COMPLETED"] == 200, 90, "the other tasks to complete")
    result = crashed.get(timeout_ms=30_000)
    assert result.is_err()
    assert result.unwrap_err().error_code == "WORKER_CRASHED"
    runs = Counter(log.read_text().split())
    markers = [f"b{i}" for i in range(100)] + [f"a{i}" for i in range(100)]
    assert {m: runs[m] for m in markers} == dict.fromkeys(markers, 1)
    assert worker.alive
