"""Minimal app for throughput measurements: one no-op task."""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """One task, ``tp.noop``, that returns None at once."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("tp.noop")
    def noop() -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
