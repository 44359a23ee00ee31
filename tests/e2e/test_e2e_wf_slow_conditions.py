"""User code of a workflow (a condition) runs outside the engine's locks and off the worker's
loop, within ``condition_timeout_s``:

- a condition that sleeps 2 s on one worker does not delay another node of the same workflow
  finishing on another worker;
- a condition that hangs is given up after the time limit (its node is skipped), while a task on
  the same worker keeps its heartbeats and completes;
- a worker stopped while a condition hangs exits at once.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from e2e_harness import ROOT, StartWorker, WorkerProcess, wait_until
from horsies import Horsies, WorkflowStatus, WorkflowTaskStatus
from horsies.codec import task_result_from_json
from psycopg.rows import dict_row

# The worker imports the app as "tests.e2e.apps.wf_slow_condition"; importing it under the same
# name here records that module on the workflow row, so the worker finds the condition.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
from tests.e2e.apps import wf_slow_condition as app_module
from tests.e2e.apps.wf_slow_condition import HangingCondition, SlowCondition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "condition-started"
    monkeypatch.setenv(app_module.ENV_MARKER, str(path))  # inherited by the workers
    return path


@pytest.fixture
def producer(database_url: str, clean_db: str) -> Iterator[Horsies]:
    del clean_db
    app = app_module.make_app(database_url)
    app.get_broker().ensure_schema_initialized_sync()
    yield app
    app.get_broker().close()


def test_a_slow_condition_does_not_delay_another_node_finishing(
    start_worker: StartWorker, producer: Horsies, marker: Path
) -> None:
    # One task at a time each: the two roots run on different workers.
    workers = [start_worker("wf_slow_condition", "--processes", "1") for _ in range(2)]
    handle = SlowCondition.build(producer).start()
    wait_until(marker.exists, 60, "the condition to begin")
    task = wait_until(
        lambda: _task_row(producer, "slowcond.gated_by_marker", "COMPLETED"),
        60,
        "the other node's task to be written",
        interval=0.01,
    )
    seen_at = time.time()  # when its outcome became visible (committed)
    gated = task_result_from_json(task["result"]).unwrap()
    assert gated >= float(marker.read_text())  # it finished while the condition slept
    # Its outcome was written at once, not after the condition's 2 s (which holds no lock).
    assert seen_at - gated < app_module.CONDITION_SLEEP_S / 2, seen_at - gated
    wait_until(lambda: handle.status() is not WorkflowStatus.RUNNING, 60, "the workflow to finish")
    assert handle.status() is WorkflowStatus.COMPLETED
    assert handle.result_for(SlowCondition.guarded).unwrap() == "ran"
    _stop(*workers)


def test_a_hanging_condition_is_given_up_and_harms_nothing_beside_it(
    start_worker: StartWorker, producer: Horsies, marker: Path
) -> None:
    worker = start_worker("wf_slow_condition", "--processes", "2")
    # Beside the condition, a task longer than the 2 s stale threshold: it needs its heartbeats.
    producer.get_broker().enqueue("slowcond.steady", (6.0,))
    handle = HangingCondition.build(producer).start()
    wait_until(marker.exists, 60, "the condition to begin")
    began = time.monotonic()
    wait_until(lambda: handle.status() is not WorkflowStatus.RUNNING, 30, "the workflow to end")
    given_up_s = time.monotonic() - began
    assert handle.status() is WorkflowStatus.COMPLETED
    statuses = {info.node_id: info.status for info in handle.tasks()}
    assert statuses["conditional"] is WorkflowTaskStatus.SKIPPED, statuses
    assert given_up_s < app_module.HANG_S / 4, given_up_s  # 3 s limit, not the 40 s hang
    assert "workflow_condition_timeout" in worker.output()
    steady = wait_until(
        lambda: _task_row(producer, "slowcond.steady", "COMPLETED"), 30, "the steady task to end"
    )
    assert task_result_from_json(steady["result"]).unwrap() == "steady"
    _stop(worker)


def test_a_worker_stopped_while_a_condition_hangs_exits_at_once(
    start_worker: StartWorker,
    producer: Horsies,
    marker: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(app_module.ENV_CONDITION_TIMEOUT, "120")  # the hang outlasts the test
    worker = start_worker("wf_slow_condition", "--processes", "1")
    HangingCondition.build(producer).start()
    wait_until(marker.exists, 60, "the condition to begin")
    stopped = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait_exit(20) == 0, worker.output()
    assert time.monotonic() - stopped < app_module.HANG_S / 2


def _stop(*workers: WorkerProcess) -> None:
    """Stop this test's workers: the module's workers outlive a test, and the next test's workflow
    must run where its own marker path is set."""
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait_exit(30)


def _task_row(app: Horsies, task_name: str, status: str) -> dict[str, Any] | None:
    conninfo = app.config.broker.conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute("SELECT status, result FROM horsies_tasks WHERE task_name = %s", (task_name,))
        found = cur.fetchone()
    return found if found is not None and found["status"] == status else None
