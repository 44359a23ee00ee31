"""An app for the worker-child footprint tests: what a child has loaded, and a send from a child.

It also builds a workflow at import time (as ``bench/bench_app.py`` does), which must not create
the broker. The database URL comes from ``HORSIES_FOOTPRINT_DATABASE_URL`` (children inherit it);
without it nothing here connects anywhere.
"""

from __future__ import annotations

import os
import sys

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.workflows.nodes import TaskNode

DATABASE_URL_ENV = "HORSIES_FOOTPRINT_DATABASE_URL"

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(
                DATABASE_URL_ENV, "postgresql+psycopg://u:p@localhost:1/unused"
            )
        )
    )
)


@app.task("footprint.noop")
def noop() -> TaskResult[None, TaskError]:
    return TaskResult(ok=None)


@app.task("footprint.loaded")
def loaded(names: list[str]) -> TaskResult[dict[str, bool], TaskError]:
    """Which of ``names`` are in this process's ``sys.modules``."""
    return TaskResult(ok={name: name in sys.modules for name in names})


IMPORTED_IN = os.getpid()
"""The process that imported this module: the fork server, whose children inherit it."""


@app.task("footprint.imported_in")
def imported_in() -> TaskResult[int, TaskError]:
    """The pid of the process that imported the app."""
    return TaskResult(ok=IMPORTED_IN)


@app.task("footprint.send_noop")
def send_noop() -> TaskResult[dict[str, object], TaskError]:
    """Send ``footprint.noop`` from the child; report the task id and whether psycopg is loaded."""
    before = "psycopg" in sys.modules
    handle = noop.send()
    return TaskResult(
        ok={"task_id": handle.task_id, "before": before, "after": "psycopg" in sys.modules}
    )


pair = app.workflow(
    "footprint_pair",
    [first := TaskNode(fn=noop, node_id="first"), TaskNode(fn=noop, waits_for=[first])],
)
"""Built at import time, like most apps' workflows: its broker is created when it is started."""
