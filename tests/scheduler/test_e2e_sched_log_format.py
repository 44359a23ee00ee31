"""``horsies scheduler --log-format json``: every stderr line of a real scheduler, from start-up to
stop, is one JSON record with a dated timestamp."""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from process_harness import LoggedProcess, child_env
from sched_harness import APP_LOCATOR, ENV_SPEC, ENV_URL, READY_MARKER, interval_schedule

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_a_scheduler_logs_json_lines_from_start_to_stop(database_url: str, tmp_path: Path) -> None:
    spec = {"schedules": [interval_schedule("hourly", seconds=3600)]}
    env = child_env({ENV_URL: database_url, ENV_SPEC: json.dumps(spec), "NO_COLOR": "1"})
    command = [sys.executable, "-m", "horsies", "scheduler", APP_LOCATOR, "--log-format", "json"]
    scheduler = LoggedProcess(
        command, env, tmp_path / "stdout.log", stderr_path=tmp_path / "stderr.log"
    )
    try:
        scheduler.wait_output(READY_MARKER)
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait_exit(30) == 0
    finally:
        scheduler.reap()

    entries: list[dict[str, Any]] = [json.loads(line) for line in scheduler.errors().splitlines()]
    ready = next(e for e in entries if READY_MARKER in e["message"])
    assert (ready["level"], ready["logger"], ready["role"]) == (
        "INFO",
        "horsies.scheduler",
        "scheduler",
    )
    created = next(e for e in entries if e.get("action") == "schedule_created")
    assert "'hourly'" in created["message"]
    assert "task_id" not in created
    for entry in entries:
        stamped = datetime.fromisoformat(entry["timestamp"])
        assert stamped.tzinfo is not None, entry
        assert abs(stamped - datetime.now(UTC)) < timedelta(minutes=5), entry
    assert READY_MARKER not in scheduler.log_path.read_text()  # stdout: the banner only
