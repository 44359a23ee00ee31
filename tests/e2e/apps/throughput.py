"""Minimal app for throughput measurements: a no-op task, and one that records its executions."""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """``tp.noop`` returns None at once; ``tp.record`` appends its marker to a file first."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("tp.noop")
    def noop() -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    @app.task("tp.record")
    def record(path: str, marker: str) -> TaskResult[None, TaskError]:
        # One short append per execution: tests count how often each task ran.
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(marker + "\n")
        return TaskResult(ok=None)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
