"""Pieces of SQL that several statements share; not statements themselves."""

from __future__ import annotations

from typing import Final

# Tasks (``t``) with the time of the latest runner heartbeat of their current attempt
# (``hb.last_heartbeat``; rows without an attempt were written before attempts existed).
TASKS_WITH_LAST_HEARTBEAT: Final = """
FROM horsies_tasks AS t
LEFT JOIN LATERAL (
    SELECT max(h.sent_at) AS last_heartbeat FROM horsies_heartbeats AS h
    WHERE h.task_id = t.id AND h.role = 'runner' AND (h.attempt IS NULL OR h.attempt = t.attempt)
) AS hb ON true"""

# RUNNING tasks whose later of started_at and last heartbeat is older than what the caller appends.
RUNNING_SILENT_SINCE: Final = (
    TASKS_WITH_LAST_HEARTBEAT
    + """
WHERE t.status = 'RUNNING'
  AND t.started_at IS NOT NULL
  AND GREATEST(t.started_at, hb.last_heartbeat)"""
)

# The pieces of horsies_claim_and_start_limited that its two versions share word for word (migration
# 10's in sql/limits.py, migration 14's in sql/limit_claim.py).
CLAIM_FUNCTION_SIGNATURE: Final = """
CREATE OR REPLACE FUNCTION horsies_claim_and_start_limited(
    p_queue_name TEXT, p_pids INTEGER[], p_worker_id TEXT, p_hostname TEXT,
    p_task_names TEXT[], p_limit_names TEXT[], p_lock_keys BIGINT[], p_claim_limit INTEGER,
    p_lease_ms INTEGER)
RETURNS TABLE (
    id VARCHAR, task_name VARCHAR, queue_name VARCHAR, priority INTEGER, args TEXT, kwargs TEXT,
    retry_count INTEGER, max_retries INTEGER, task_options TEXT, sent_at TIMESTAMPTZ,
    workflow_id VARCHAR, attempt INTEGER, pid INTEGER, wake_in_ms INTEGER)
"""
"""``CREATE OR REPLACE FUNCTION horsies_claim_and_start_limited(...) RETURNS TABLE (...)``."""
CLAIM_ONLY_BRANCH: Final = """    IF p_pids IS NULL THEN
        -- Claim only (a worker with cluster-wide caps starts its claims afterwards).
        RETURN QUERY
        WITH claimed AS (
            UPDATE horsies_tasks AS t
            SET status = 'CLAIMED',
                claimed = true,
                claimed_at = now(),
                claimed_by_worker_id = p_worker_id,
                claim_expires_at = now() + p_lease_ms * interval '1 millisecond',
                attempt = t.attempt + 1,
                updated_at = now()
            WHERE t.id = ANY(v_chosen)
            RETURNING t.id, t.task_name, t.queue_name, t.priority, t.args, t.kwargs,
                      t.retry_count, t.max_retries, t.task_options, t.sent_at, t.workflow_id,
                      t.attempt
        )
        SELECT c.id, c.task_name, c.queue_name, c.priority, c.args, c.kwargs, c.retry_count,
               c.max_retries, c.task_options, c.sent_at, c.workflow_id, c.attempt,
               NULL::INTEGER, NULL::INTEGER
        FROM claimed AS c;
"""
"""With ``p_pids`` NULL, the chosen tasks are CLAIMED with a lease (opens the final ``IF``)."""
WAKE_ROW_AND_END: Final = """    IF v_wake IS NOT NULL THEN
        RETURN QUERY
        SELECT NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::INTEGER, NULL::TEXT,
               NULL::TEXT, NULL::INTEGER, NULL::INTEGER, NULL::TEXT, NULL::TIMESTAMPTZ,
               NULL::VARCHAR, NULL::INTEGER, NULL::INTEGER,
               greatest(1, ceil(extract(epoch FROM v_wake - clock_timestamp()) * 1000))::INTEGER;
    END IF;
END
$fn$;
"""
"""The wake-up row of a rate-limited key that had to wait, and the end of the function."""
