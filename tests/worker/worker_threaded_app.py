"""An app whose import starts a thread (as a telemetry exporter or a client's keep-alive may): a
process that imported it must not fork, so worker children import it themselves."""

from __future__ import annotations

import os
import threading

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

app = Horsies(
    AppConfig(broker=PostgresConfig(database_url="postgresql+psycopg://u:p@localhost:1/unused"))
)

_idle = threading.Event()
threading.Thread(target=_idle.wait, name="import-time-thread", daemon=True).start()

IMPORTED_IN = os.getpid()
"""The process that imported this module."""


@app.task("threaded.imported_in")
def imported_in() -> TaskResult[int, TaskError]:
    """The pid of the process that imported the app."""
    return TaskResult(ok=IMPORTED_IN)
