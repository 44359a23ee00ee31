"""Task lifecycle states."""

from __future__ import annotations

from enum import Enum
from typing import Final

__all__ = ["TASK_TERMINAL_STATES", "TaskStatus"]


class TaskStatus(Enum):
    """State of a task row.

    Python values are lower-case; the database stores the upper-case member *names*
    (`'PENDING'`, `'RUNNING'`, ...), so use `TaskStatus[row_status]` / `status.db_value` when
    talking to SQL.
    """

    PENDING = "pending"
    """Waiting to be claimed (new, delayed by `schedule`, or waiting for a retry)."""
    CLAIMED = "claimed"
    """Reserved by a worker, not started yet."""
    RUNNING = "running"
    """Executing in a worker child process."""
    COMPLETED = "completed"
    """Finished with an ok result (terminal)."""
    FAILED = "failed"
    """Finished with an error result and no retry left (terminal)."""
    CANCELLED = "cancelled"
    """Cancelled before completion (terminal)."""
    REQUEUED = "requeued"
    """Kept for compatibility; never written (a retry goes RUNNING -> PENDING directly)."""

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED: the task will not change any more."""
        return self in TASK_TERMINAL_STATES

    @property
    def db_value(self) -> str:
        """The spelling stored in the `status` column (the upper-case member name)."""
        return self.name


TASK_TERMINAL_STATES: Final[frozenset[TaskStatus]] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)
"""States after which a task never changes."""
