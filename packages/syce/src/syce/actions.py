"""Operator actions, all through horsies-core's public API (Syce writes no SQL of its own).

Workflows: pause / resume / cancel with `horsies.WorkflowHandle`. Tasks: cancel a task (a running
plain task is stopped by its worker) and run an ended one again with `TaskHandle.cancel()` /
`TaskHandle.retry()`. Syce does not import the user's app, so workflow nodes that need user code
(conditions, child workflows) are left for a worker's reaper to evaluate.
"""

from __future__ import annotations

from horsies import WorkflowHandle
from horsies.broker import PostgresBroker
from horsies.config import PostgresConfig
from horsies.core.task_decorator import TaskHandle
from horsies.workflows.store.hooks import WORKFLOW_STORE

__all__ = ["Actions"]


class Actions:
    """Blocking operator actions (call them from a thread worker)."""

    def __init__(self, config: PostgresConfig) -> None:
        self._config = config
        self._broker: PostgresBroker | None = None
        self._closed = False

    @property
    def broker(self) -> PostgresBroker:
        if self._closed:
            raise RuntimeError("the dashboard is shutting down")
        if self._broker is None:
            # Without the app there is no user code to run: nodes that need it stay READY for a
            # worker's reaper; everything else advances as it would in a worker.
            self._broker = PostgresBroker(
                self._config.model_copy(update={"pool_size": 1, "max_overflow": 1}),
                workflows=WORKFLOW_STORE,
            )
        return self._broker

    def close(self) -> None:
        self._closed = True
        if self._broker is not None:
            self._broker.close()
            self._broker = None

    def pause_workflow(self, workflow_id: str) -> bool:
        return WorkflowHandle(workflow_id, self.broker).pause()

    def resume_workflow(self, workflow_id: str) -> bool:
        return WorkflowHandle(workflow_id, self.broker).resume()

    def cancel_workflow(self, workflow_id: str) -> bool:
        WorkflowHandle(workflow_id, self.broker).cancel()
        return True

    def cancel_task(self, task_id: str) -> bool:
        return TaskHandle[object](task_id, broker=self.broker).cancel()

    def retry_task(self, task_id: str) -> bool:
        return TaskHandle[object](task_id, broker=self.broker).retry()
