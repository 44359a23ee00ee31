"""The workers' maintenance prunes a backlog of old finished tasks a little at a time while they
keep running tasks: the old rows go, every task sent meanwhile runs and keeps its result."""

from __future__ import annotations

import pytest
from apps.retention import create_app
from e2e_harness import Db, StartWorker, producer_app, wait_until
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

app = producer_app(create_app)

BACKLOG = 20_000


def test_a_backlog_is_pruned_while_tasks_keep_running(
    start_worker: StartWorker, app: Horsies, db: Db
) -> None:
    db.execute(
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at, completed_at,"
        " updated_at, result)"
        " SELECT 'old-' || i, 'rt.echo', 'default', 'COMPLETED', now() - interval '30 days',"
        " now() - interval '30 days', now() - interval '30 days', '{}'"
        " FROM generate_series(1, %s) AS i",
        (BACKLOG,),
    )
    start_worker("retention", "--processes", "2")
    echo = app.tasks["rt.echo"]
    results: list[int] = []

    def pruned() -> bool:
        results.extend(h.get(timeout_ms=30_000).unwrap() for h in echo.send_many([{"n": 1}] * 20))
        left = db.query("SELECT count(*) AS n FROM horsies_tasks WHERE id LIKE 'old-%%'")
        return left[0]["n"] == 0

    wait_until(pruned, 90, "the backlog to be pruned", interval=0.2)
    assert results == [1] * len(results)
    recent = db.query(
        "SELECT count(*) AS n FROM horsies_tasks"
        " WHERE task_name = 'rt.echo' AND id NOT LIKE 'old-%%'"
    )
    assert recent[0]["n"] == len(results)  # recent results are kept
