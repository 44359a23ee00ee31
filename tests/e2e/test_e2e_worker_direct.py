"""Two real workers on one queue in hard-cap mode, where a claim moves a task from PENDING straight
to RUNNING: every task runs exactly once, on exactly one worker, and ends COMPLETED.

Concurrent claims skip rows another worker has locked (SKIP LOCKED); the claim and the start are
one statement.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from apps.throughput import create_app
from e2e_harness import Db, StartWorker, producer_app, wait_until
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TASKS = 400

app = producer_app(create_app)


def test_two_workers_run_every_task_exactly_once(
    start_worker: StartWorker, app: Horsies, db: Db, tmp_path: Path
) -> None:
    first = start_worker("throughput", "--processes", "2")
    second = start_worker("throughput", "--processes", "2")
    log = tmp_path / "executions.log"
    handles = app.tasks["tp.record"].send_many([(str(log), f"m{i}") for i in range(TASKS)])
    ids = [h.task_id for h in handles]

    def all_completed() -> bool:
        rows = db.query(
            "SELECT count(*) AS n FROM horsies_tasks WHERE id = ANY(%s) AND status = 'COMPLETED'",
            (ids,),
        )
        return rows[0]["n"] == TASKS

    wait_until(all_completed, 90, "every task to complete")
    runs = Counter(log.read_text().split())
    assert runs == Counter({f"m{i}": 1 for i in range(TASKS)})
    rows = db.query(
        "SELECT claimed_by_worker_id, worker_pid, started_at, completed_at, retry_count "
        "FROM horsies_tasks WHERE id = ANY(%s)",
        (ids,),
    )
    assert all(r["started_at"] <= r["completed_at"] for r in rows)
    assert {r["retry_count"] for r in rows} == {0}
    # Both workers took part, and each row names the one child that ran it.
    assert len({r["claimed_by_worker_id"] for r in rows}) == 2
    assert len({r["worker_pid"] for r in rows}) <= 4
    assert first.alive
    assert second.alive
