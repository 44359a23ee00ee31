"""The app the benchmark's worker runs: one no-op task, so the figures measure the queue itself.

The database URL comes from ``HORSIES_BENCH_DATABASE_URL``, so the benchmark process, the worker it
starts (``horsies worker bench/bench_app.py:app``) and the worker's children build the same app.
Building the app does no I/O: importing this module without the variable is harmless.
"""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

DATABASE_URL_ENV = "HORSIES_BENCH_DATABASE_URL"

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(DATABASE_URL_ENV, "postgresql://localhost/horsies_bench")
        )
    )
)


@app.task("bench.noop")
def noop() -> TaskResult[None, TaskError]:
    """Return at once: everything measured around it is queue overhead."""
    return TaskResult(ok=None)
