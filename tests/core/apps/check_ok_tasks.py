"""Task module discovered by `check_ok_app`."""

from __future__ import annotations

import sys

from check_ok_app import app
from horsies.results import TaskError, TaskResult


@app.task("check_ok.double")
def double(x: int) -> TaskResult[int, TaskError]:
    """Double a number."""
    return TaskResult(ok=2 * x)


sys.stderr.write(f"task-module-send:{double.send(1).task_id}\n")
