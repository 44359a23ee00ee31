"""A script that runs a worker programmatically: ``python tests/e2e/apps/script_worker.py``.

Its module-level ``send`` runs once in the parent; the worker's children import this file again
(by its path, not as ``__main__``) with sends suppressed, so they add no tasks.
"""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(
                "HORSIES_E2E_DATABASE_URL", "postgresql+psycopg://unused@127.0.0.1:1/unused"
            )
        )
    )
)


@app.task("script.add")
def add(a: int, b: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=a + b)


add.send(20, 22)

if __name__ == "__main__":
    from horsies_worker import run_worker

    run_worker(app, processes=2, shutdown_timeout_s=5)
