"""An app for the fork server's end-to-end test: what a child has loaded, and where it runs."""

from __future__ import annotations

import os
import sys
import time

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """Build the app and register its tasks (same names in the worker and the test process)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("tree.where")
    def where(names: list[str], hold_s: float) -> TaskResult[list[object], TaskError]:
        """This child's pid and which of ``names`` it has loaded, after ``hold_s`` seconds (two
        calls sent together then run on two children)."""
        time.sleep(hold_s)
        return TaskResult(ok=[os.getpid(), {name: name in sys.modules for name in names}])

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
