"""`horsies check` fixture: a valid app with one discovered task module and module-level sends."""

from __future__ import annotations

import os
import sys

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(
                "HORSIES_TEST_APP_DB_URL", "postgresql://user:secret@localhost:1/none"
            )
        )
    )
)
app.discover_tasks([os.path.join(os.path.dirname(__file__), "check_ok_tasks.py")])


@app.task("check_ok.hello")
def hello(name: str) -> TaskResult[str, TaskError]:
    """Greet someone."""
    return TaskResult(ok=f"hello {name}")


# A module-level send must not enqueue while `horsies check` imports this module.
sys.stderr.write(f"app-module-send:{hello.send('import').task_id}\n")
