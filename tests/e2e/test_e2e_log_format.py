"""``horsies worker --log-format json``: a real worker, its children included, writes one JSON
object per stderr line; a failed task's record names its action and task id and carries a dated
timestamp and the traceback as fields."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apps.log_format import ENV_URL, create_app
from e2e_harness import producer_app
from horsies.app import Horsies
from process_harness import LoggedProcess, child_env, run_horsies, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 30_000

app = producer_app(create_app)


def records(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (fails on a line that is not one)."""
    parsed: list[dict[str, Any]] = []
    for line in text.splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        parsed.append(entry)
    return parsed


def assert_dated(entry: dict[str, Any]) -> None:
    stamped = datetime.fromisoformat(entry["timestamp"])
    assert stamped.tzinfo is not None, entry
    assert abs(stamped - datetime.now(UTC)) < timedelta(minutes=5), entry


@pytest.fixture
def json_worker(database_url: str, app: Horsies, tmp_path: Path) -> Iterator[LoggedProcess]:
    del app  # the producer creates the schema before the worker starts
    command = [
        sys.executable,
        "-m",
        "horsies",
        "worker",
        "tests.e2e.apps.log_format:app",
        "--processes",
        "1",
        "--log-format",
        "json",
    ]
    env = child_env({ENV_URL: database_url})
    worker = LoggedProcess(
        command, env, tmp_path / "stdout.log", stderr_path=tmp_path / "stderr.log"
    )
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.reap()


def test_every_stderr_line_of_a_worker_is_a_json_record(
    json_worker: LoggedProcess, app: Horsies
) -> None:
    handle = app.tasks["logfmt.fail"].send("bad\n[00:00:00] [worker] [INFO] forged\x1b[2J")
    assert handle.get(timeout_ms=GET_MS).is_err()
    child_pid = app.tasks["logfmt.note"].send("from the child").get(timeout_ms=GET_MS).unwrap()

    def failure_logged() -> dict[str, Any] | None:
        for entry in records(json_worker.errors()):
            if entry.get("action") == "task_failed":
                return entry
        return None

    failed = wait_until(failure_logged, 10, "the task_failed record")
    json_worker.send_signal(signal.SIGTERM)
    assert json_worker.wait_exit(60) == 0

    everything = records(json_worker.errors())  # every line, the shutdown's included
    assert failed["task_id"] == handle.task_id
    assert failed["task_name"] == "logfmt.fail"
    assert failed["level"] == "WARNING"
    assert failed["logger"] == "horsies.worker"
    assert_dated(failed)
    # The quoted error comes back exactly as raised, yet it could not forge a line: every
    # line of stderr parsed as one record.
    assert "ValueError: bad\n[00:00:00] [worker] [INFO] forged\x1b[2J" in failed["message"]
    assert failed["traceback"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad" in failed["traceback"]

    main = next(e for e in everything if e.get("role") == "worker" and " ready: " in e["message"])
    note = next(e for e in everything if e.get("action") == "task_note")
    assert note["message"] == "task_note: from the child"
    assert (note["role"], note["pid"]) == ("worker-child", child_pid)
    assert note["worker_id"] == main["worker_id"]
    assert note["pid"] != main["pid"]
    for entry in everything:
        assert_dated(entry)
        assert {"level", "logger", "message", "pid", "hostname"} <= entry.keys()
    assert "task_failed" not in json_worker.log_path.read_text()  # stdout: the banner only


def test_a_start_up_error_is_a_json_record_too() -> None:
    result = run_horsies(
        "worker", "tests.e2e.apps.no_such_module:app", "--processes", "1", "--log-format", "json"
    )
    assert result.returncode == 1, result.stderr
    (entry,) = records(result.stderr)
    assert (entry["level"], entry["action"]) == ("CRITICAL", "error")
    assert "no_such_module" in entry["message"]
    assert entry["report"].startswith(f"error[{entry['code']}]: ")
    assert_dated(entry)
