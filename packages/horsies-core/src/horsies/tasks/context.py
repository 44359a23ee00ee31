"""`TaskContext`: what a running task may know about its own run.

A task asks for it by declaring a parameter named ``task_ctx``; the worker fills it in, the way
it fills in ``workflow_meta``. Callers never pass it (a send does not count it as missing), and a
direct in-process call leaves it to the parameter's default, so declare it as
``task_ctx: TaskContext | None = None`` when the function is also called directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

__all__ = ["TASK_CTX_PARAM", "TaskContext"]

TASK_CTX_PARAM: Final = "task_ctx"
"""The parameter name that asks the worker for the task's `TaskContext`."""


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The run of a task as the worker sees it.

    Attributes:
        task_id: the task's id (the same as its handle's `task_id`).
        task_name: the registered task name.
        queue_name: the queue it was claimed from.
        priority: its priority (1 runs first, 100 last).
        retry_count: how many earlier runs failed and were retried (0 on the first run).
        max_retries: how many retries its retry policy allows in all.
        sent_at: when it was sent (or when its scheduled delay ended).
        workflow_id: the workflow it is a node of, or None.
        workflow_task_index: its node's index in that workflow, or None.
    """

    task_id: str
    task_name: str
    queue_name: str
    priority: int
    retry_count: int
    max_retries: int
    sent_at: datetime
    workflow_id: str | None = None
    workflow_task_index: int | None = None

    @property
    def attempt(self) -> int:
        """This run's number, counting from 1 (``retry_count + 1``)."""
        return self.retry_count + 1

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure of this run will not be retried by the retry policy."""
        return self.retry_count >= self.max_retries
