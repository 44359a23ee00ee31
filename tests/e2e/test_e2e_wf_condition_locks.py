"""User code of a workflow (a condition) runs outside the engine's locks: a condition that sleeps
2 s on one worker does not delay another node of the same workflow finishing on another worker."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from e2e_harness import ROOT, StartWorker, wait_until
from horsies import Horsies, WorkflowStatus
from horsies.codec import task_result_from_json
from psycopg.rows import dict_row

# The worker imports the app as "tests.e2e.apps.wf_slow_condition"; importing it under the same
# name here records that module on the workflow row, so the worker finds the condition.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
from tests.e2e.apps import wf_slow_condition as app_module
from tests.e2e.apps.wf_slow_condition import SlowCondition

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
    for _ in range(2):  # one task at a time each: the two roots run on different workers
        start_worker("wf_slow_condition", "--processes", "1")
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


def _task_row(app: Horsies, task_name: str, status: str) -> dict[str, Any] | None:
    conninfo = app.config.broker.conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute("SELECT status, result FROM horsies_tasks WHERE task_name = %s", (task_name,))
        found = cur.fetchone()
    return found if found is not None and found["status"] == status else None
