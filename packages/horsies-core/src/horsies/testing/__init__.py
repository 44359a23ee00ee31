"""Helpers for testing code that uses horsies, against a real PostgreSQL (docs/testing.md).

- a throw-away server and databases with horsies' schema: `ThrowawayServer`,
  `throwaway_server()`, `throwaway_database()`, and `use_database(app, url)` to point an app
  created at import time at one of them;
- running the due tasks of an app now, in this process, as a worker would: `run_pending()`
  (`run_pending_async()` in async code), which returns what ran as `RanTask`s;
- what was sent, without running it: `sent_tasks()` (`SentTask` records) and `assert_sent()`;
- a real worker subprocess for an app: `start_worker()` (`WorkerProcess`).

The same as pytest fixtures: add ``pytest_plugins = ["horsies.testing.pytest_plugin"]`` to your
top-level ``conftest.py``. Running tasks and starting workers needs horsies-worker; the embedded
server needs ``horsies-core[embedded]`` (or ``HORSIES_TEST_DATABASE_URL``).
"""

from __future__ import annotations

from horsies.testing.databases import (
    ThrowawayServer,
    throwaway_database,
    throwaway_server,
    use_database,
)
from horsies.testing.in_process import RanTask, run_pending, run_pending_async
from horsies.testing.sent import SentTask, assert_sent, sent_tasks
from horsies.testing.worker_process import WorkerProcess, WorkerStartError, start_worker

__all__ = [
    "RanTask",
    "SentTask",
    "ThrowawayServer",
    "WorkerProcess",
    "WorkerStartError",
    "assert_sent",
    "run_pending",
    "run_pending_async",
    "sent_tasks",
    "start_worker",
    "throwaway_database",
    "throwaway_server",
    "use_database",
]
