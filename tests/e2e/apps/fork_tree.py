"""An app for the fork server's end-to-end test: what a child has loaded, and where it runs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"
_MEET_S = 30.0
"""How long a call of ``tree.where`` waits for the others."""


def create_app(database_url: str) -> Horsies:
    """Build the app and register its tasks (same names in the worker and the test process)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("tree.where")
    def where(names: list[str], meeting: str, count: int) -> TaskResult[list[object], TaskError]:
        """This child's pid and which of ``names`` it has loaded, once ``count`` calls have
        arrived in the directory ``meeting`` (so that calls sent together run on as many
        children, never one after another on the same child)."""
        here = Path(meeting)
        (here / str(os.getpid())).touch()
        deadline = time.monotonic() + _MEET_S
        while len(list(here.iterdir())) < count:
            if time.monotonic() > deadline:
                return TaskResult(err=TaskError(error_code="ALONE", message="no other call came"))
            time.sleep(0.01)
        return TaskResult(ok=[os.getpid(), {name: name in sys.modules for name in names}])

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
