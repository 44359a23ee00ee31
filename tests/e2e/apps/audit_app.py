"""App of the audit end-to-end tests: odd task names, module-level sends (suppressed while the
worker imports the module), bad results.

The module and its discovered task module (``audit_tasks``) each send a task while being imported;
every import a worker performs must suppress it. Each such send prints a marker line
``audit-import-send:<module>:<task id>:<pid>`` on stderr so the test can see that the import
happened and which id the send returned.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

ODD_NAME = 'audit.it\'s; DROP TABLE horsies_tasks; --"x" $$ %s'
IMPORT_SEND_TASK = "audit.import_send"
TASKS_MODULE = "tests.e2e.apps.audit_tasks"


def create_app(database_url: str) -> Horsies:
    """Build the app and register its tasks (same names in the worker and the test process)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))
    app.discover_tasks([TASKS_MODULE])

    @app.task(ODD_NAME)
    def odd(*values: Any, **named: Any) -> TaskResult[list[Any], TaskError]:
        return TaskResult(ok=[*values, named])

    @app.task  # default name "<module>.<qualname>"
    def bare() -> TaskResult[str, TaskError]:
        return TaskResult(ok="bare")

    @app.task(IMPORT_SEND_TASK)
    def import_send() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    @app.task("audit.unserializable")
    def unserializable() -> TaskResult[object, TaskError]:
        return TaskResult(ok={1, 2, 3})

    @app.task(
        "audit.fail",
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["UNHANDLED_EXCEPTION"],
    )
    def fail() -> TaskResult[int, TaskError]:
        raise ValueError("always")

    @app.task("audit.span")
    def span(seconds: float) -> TaskResult[list[float], TaskError]:
        start = time.time()
        time.sleep(seconds)
        return TaskResult(ok=[start, time.time(), float(os.getpid())])

    return app


def report_import_send(app: Horsies, module: str) -> None:
    """The module-level send of an app/task module (a no-op outside a worker test run)."""
    if os.environ.get(ENV_URL):
        handle = app.tasks[IMPORT_SEND_TASK].send()
        sys.stderr.write(f"audit-import-send:{module}:{handle.task_id}:{os.getpid()}\n")


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
report_import_send(app, "app")
