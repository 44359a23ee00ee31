"""Task module with a definition error, found by `horsies check` (not at app import)."""

from __future__ import annotations

from check_bad_app import app
from horsies.results import TaskError, TaskResult


@app.task("check_bad.queued", queue_name="emails")
def queued() -> TaskResult[int, TaskError]:
    return TaskResult(ok=1)
