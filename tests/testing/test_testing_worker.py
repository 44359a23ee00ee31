"""The horsies_worker fixture: a real `horsies worker` for the test's app, ready when it returns,
stopped after the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from horsies import Horsies
from horsies.testing import WorkerStartError, sent_tasks
from horsies.testing.pytest_plugin import StartWorker
from orders_app import ADD_THEN_DOUBLE, ENV_URL, add_async, flaky, place_order

pytestmark = [pytest.mark.timeout(90), pytest.mark.e2e]

HERE = Path(__file__).parent


def test_a_worker_runs_tasks_and_workflows_end_to_end(
    horsies_app: Horsies, horsies_worker: StartWorker, horsies_database_url: str
) -> None:
    worker = horsies_worker(
        "orders_app:app", env={ENV_URL: horsies_database_url}, processes=2, cwd=HERE
    )
    assert worker.alive
    placed = place_order.send(9)
    receipt_id = placed.get(timeout_ms=30_000).unwrap()
    assert add_async.send(20, 22).get(timeout_ms=30_000).unwrap() == 42
    assert ADD_THEN_DOUBLE.start().get(timeout_ms=30_000).unwrap() == 10
    retried = flaky.send().get(timeout_ms=30_000)
    assert retried.unwrap() == 2
    names = {row.task_id: row.task_name for row in sent_tasks(horsies_app)}
    assert names[receipt_id] == "orders.send_receipt"
    assert worker.stop() == 0
    assert not worker.alive


def test_a_worker_that_cannot_start_says_why(horsies_worker: StartWorker) -> None:
    with pytest.raises(WorkerStartError, match=r"exited with status \d+; output:\n(.|\n)*nowhere"):
        horsies_worker("nowhere_app:app", cwd=HERE, ready_timeout_s=30)
