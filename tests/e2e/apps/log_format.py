"""App of the log-format tests: a task that fails and one that logs through a horsies logger from
the worker's child process."""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.logs import get_logger
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """Build the app and register its tasks (same names in the worker and the test process)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("logfmt.fail")
    def fail(message: str) -> TaskResult[int, TaskError]:
        raise ValueError(message)

    @app.task("logfmt.note")
    def note(text: str) -> TaskResult[int, TaskError]:
        get_logger("app").info("task_note: %s", text)
        return TaskResult(ok=os.getpid())

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
