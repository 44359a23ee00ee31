"""Helpers for the scheduler's tests: real ``horsies scheduler`` subprocesses and database reads.

Schedulers run as ``python -m horsies scheduler tests.scheduler.sched_app:app`` with ``cwd`` at
the repository root, the database URL in ``HORSIES_SCHED_DATABASE_URL`` and the schedule
configuration (JSON) in ``HORSIES_SCHED_SPEC``. Their output goes to a log file (never a
pipe that could fill up). Every wait is bounded and polls a condition; teardown stops only the
processes started here (SIGTERM, then SIGKILL).

Use from a test module (pytest puts this directory on ``sys.path``)::

    @pytest.fixture
    def start_scheduler(database_url: str, tmp_path: Path) -> Iterator[StartScheduler]:
        with scheduler_factory(database_url, tmp_path) as start:
            yield start
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from process_harness import LoggedProcess, StartedProcesses, child_env

APP_LOCATOR = "tests.scheduler.sched_app:app"
ENV_URL = "HORSIES_SCHED_DATABASE_URL"
ENV_SPEC = "HORSIES_SCHED_SPEC"
READY_MARKER = "Scheduler ready:"

_RUN_LINE = re.compile(
    r"schedule_run: '(?P<name>[^']+)' enqueued \S+ task (?P<id>\S+) .*\(slot (?P<slot>[^)]+)\)"
)


def interval_schedule(name: str, seconds: int = 1, **extra: Any) -> dict[str, Any]:
    """A schedule dict running ``sched.tick`` every ``seconds``."""
    return {
        "name": name,
        "task_name": "sched.tick",
        "pattern": {"type": "interval", "seconds": seconds},
        **extra,
    }


class SchedulerProcess(LoggedProcess):
    """One ``horsies scheduler`` subprocess started by a test."""

    kind = "scheduler"
    ready_text = READY_MARKER

    def __init__(
        self,
        database_url: str,
        spec: Mapping[str, Any],
        log_path: Path,
        args: list[str],
        locator: str = APP_LOCATOR,
    ) -> None:
        env = child_env({ENV_URL: database_url, ENV_SPEC: json.dumps(spec), "NO_COLOR": "1"})
        env.pop("HORSIES_FORCE_COLOR", None)
        command = [sys.executable, "-m", "horsies", "scheduler", locator, *args]
        super().__init__(command, env, log_path)

    def runs(self) -> dict[str, tuple[str, datetime]]:
        """Task id -> (schedule name, slot) of every ``schedule_run`` line logged so far."""
        return {
            m.group("id"): (m.group("name"), datetime.fromisoformat(m.group("slot")))
            for m in _RUN_LINE.finditer(self.output())
        }

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)


StartScheduler = Callable[..., SchedulerProcess]


@contextlib.contextmanager
def scheduler_factory(database_url: str, log_dir: Path) -> Iterator[StartScheduler]:
    """Factory (as a context manager for a fixture): ``start(spec)`` starts a scheduler on
    ``database_url`` and waits until it is ready (``ready=False`` returns at once; extra positional
    strings are command-line options; ``database_url=`` overrides the database). Every process
    started is reaped on exit."""
    started = StartedProcesses[SchedulerProcess](log_dir)

    def start(
        spec: Mapping[str, Any],
        *args: str,
        ready: bool = True,
        locator: str = APP_LOCATOR,
        database_url: str = database_url,
    ) -> SchedulerProcess:
        log_path = started.next_log("scheduler")
        process = SchedulerProcess(database_url, spec, log_path, list(args), locator=locator)
        return started.add(process, ready=ready)

    try:
        yield start
    finally:
        started.reap_all()
