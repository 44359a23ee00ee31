"""A scheduled ``async def`` task: the scheduler enqueues it on its interval and a real worker
awaits it, as for any task."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from db_rows import Db
from horsies.codec import task_result_from_json
from process_harness import LoggedProcess, child_env, wait_until
from sched_harness import APP_LOCATOR, ENV_SPEC, ENV_URL, StartScheduler

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_a_scheduled_async_task_runs_on_a_worker(
    start_scheduler: StartScheduler, sched_db: Db, database_url: str, tmp_path: Path
) -> None:
    spec = {
        "schedules": [
            {
                "name": "async-every-second",
                "task_name": "sched.async_tick",
                "pattern": {"type": "interval", "seconds": 1},
                "args": ["beat"],
            }
        ]
    }
    start_scheduler(spec)
    worker = LoggedProcess(
        [sys.executable, "-m", "horsies", "worker", APP_LOCATOR, "--processes", "1"],
        child_env({ENV_URL: database_url, ENV_SPEC: json.dumps(spec)}),
        tmp_path / "worker.log",
    )
    try:
        worker.wait_ready()

        def two_completed() -> list[dict[str, object]] | None:
            done = [r for r in sched_db.tasks() if r["status"] == "COMPLETED"]
            return done if len(done) >= 2 else None

        done = wait_until(two_completed, 30, "two async runs")
        for row in done:
            assert row["task_name"] == "sched.async_tick"
            assert task_result_from_json(str(row["result"])).unwrap() == "async beat"
    finally:
        worker.reap()
