"""The tasks that ``horsies demo`` runs; its worker imports this module as ``horsies.demo_app:app``.

The database URL comes from ``HORSIES_DEMO_DATABASE_URL`` so the demo process, the worker it
starts and the worker's children all build the same app. Building the app does no I/O, so
importing this module without the variable is harmless.
"""

from __future__ import annotations

import os
from pathlib import Path

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.demo import DATABASE_URL_ENV
from horsies.results import TaskError, TaskResult
from horsies.tasks.retry import RetryPolicy

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(DATABASE_URL_ENV, "postgresql://localhost/horsies_demo")
        )
    )
)


@app.task("demo.square")
def square(n: int) -> TaskResult[int, TaskError]:
    """The batch task: cheap, so the demo measures the queue rather than the work."""
    return TaskResult(ok=n * n)


@app.task("demo.divide")
def divide(a: float, b: float) -> TaskResult[float, TaskError]:
    """Fails with UNHANDLED_EXCEPTION (ZeroDivisionError) when ``b`` is 0."""
    return TaskResult(ok=a / b)


@app.task(
    "demo.flaky_fetch",
    retry_policy=RetryPolicy.fixed([1], jitter=False),
    auto_retry_for=["ConnectionError"],
)
def flaky_fetch(marker_file: str) -> TaskResult[str, TaskError]:
    """Raises ConnectionError on its first attempt (leaving a marker file), then succeeds."""
    marker = Path(marker_file)
    if not marker.exists():
        marker.touch()
        raise ConnectionError("simulated network blip on the first attempt")
    return TaskResult(ok="fetched on the second attempt")
