"""Task module discovered by ``audit_app``: one more task and one more module-level send."""

from __future__ import annotations

from horsies.results import TaskError, TaskResult

from tests.e2e.apps.audit_app import app, report_import_send


@app.task("audit.from_tasks_module")
def from_tasks_module() -> TaskResult[str, TaskError]:
    return TaskResult(ok="discovered")


report_import_send(app, "tasks")
