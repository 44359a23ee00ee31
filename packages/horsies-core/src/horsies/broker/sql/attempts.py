"""SQL of the attempt history: the table that keeps every attempt of a task but its last (the
task's row describes that one), and the read of a task's attempts. Rows are written by the
statements that end an attempt without ending the task: a finish that retries
(TASK_FINISH_IF_RUNNING_MANY) and an operator's retry (TASK_RETRY_IF_ENDED)."""

from __future__ import annotations

from typing import Final

# Migration 12. `status` is how the attempt ended: RETRIED, or the status the task had before an
# operator ran it again; `result` the encoded TaskResult that ended it.
V12_ATTEMPTS: Final = """
CREATE TABLE IF NOT EXISTS horsies_task_attempts (
    task_id       VARCHAR(36)  NOT NULL,
    attempt       INTEGER      NOT NULL,
    started_at    TIMESTAMPTZ,
    ended_at      TIMESTAMPTZ  NOT NULL,
    worker_id     VARCHAR(255),
    hostname      VARCHAR(255),
    pid           INTEGER,
    status        VARCHAR(9)   NOT NULL,
    result        TEXT,
    failed_reason TEXT,
    PRIMARY KEY (task_id, attempt)
);
"""

# Every attempt of a task, oldest first: the kept ones, then the task's own row when its current
# attempt has started (PENDING or CLAIMED rows are between attempts).
TASK_ATTEMPTS: Final = """
SELECT attempt, status, started_at, ended_at, worker_id, hostname, pid, result, failed_reason
FROM horsies_task_attempts
WHERE task_id = %(id)s
UNION ALL
SELECT t.attempt, t.status, t.started_at,
       CASE WHEN t.status = 'RUNNING' THEN NULL
            ELSE COALESCE(t.completed_at, t.failed_at, t.updated_at) END,
       t.claimed_by_worker_id, t.worker_hostname, t.worker_pid, t.result, t.failed_reason
FROM horsies_tasks AS t
WHERE t.id = %(id)s AND t.started_at IS NOT NULL
  AND t.status IN ('RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')
  AND NOT EXISTS (
      SELECT 1 FROM horsies_task_attempts AS a WHERE a.task_id = t.id AND a.attempt = t.attempt)
ORDER BY 1
"""
