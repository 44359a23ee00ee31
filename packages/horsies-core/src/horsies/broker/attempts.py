"""The attempt history of a task: every time its code started, how it ended, where it ran.

The task's row describes its latest attempt; each earlier one was kept in
``horsies_task_attempts`` by the statement that ended it without ending the task (a retry, an
operator's retry). An attempt number counts claims: a claim given back before its task started
(a worker shutting down, a lost connection) is no attempt of the code and is not listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from horsies.broker.sql import attempts as attempts_sql
from horsies.broker.steps import Op, Query
from horsies.codec import task_result_from_json

__all__ = ["TaskAttempt", "attempts_op"]


@dataclass(frozen=True, slots=True)
class TaskAttempt:
    """One run of a task's code.

    ``status`` is how it ended: ``RETRIED`` (another attempt followed), the task's final status
    (``COMPLETED``, ``FAILED``, ``CANCELLED``), or ``RUNNING`` while it runs. ``error_code`` and
    ``error_message`` come from the result that ended it (None for an ok one); ``failed_reason``
    is set when the worker or the reaper ended it (a crash, a time limit).
    """

    attempt: int
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    worker_id: str | None
    hostname: str | None
    pid: int | None
    error_code: str | None
    error_message: str | None
    failed_reason: str | None


def _attempt(row: Sequence[Any]) -> TaskAttempt:
    attempt, status, started, ended, worker_id, hostname, pid, result, reason = row
    code = message = None
    if isinstance(result, str):
        decoded = task_result_from_json(result)
        if decoded.is_err():
            error = decoded.unwrap_err()
            code = None if error.error_code is None else str(error.error_code)
            message = error.message
    return TaskAttempt(
        attempt=int(attempt),
        status=str(status),
        started_at=started,
        ended_at=ended,
        worker_id=worker_id,
        hostname=hostname,
        pid=pid,
        error_code=code,
        error_message=message,
        failed_reason=reason,
    )


def attempts_op(task_id: str) -> Op[list[TaskAttempt]]:
    """Every attempt of ``task_id``, oldest first (empty for an unknown task or one that never
    started)."""
    res = yield Query(attempts_sql.TASK_ATTEMPTS, {"id": task_id})
    return [_attempt(row) for row in res.rows]
