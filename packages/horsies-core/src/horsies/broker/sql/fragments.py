"""Pieces of SQL that several statements share; not statements themselves."""

from __future__ import annotations

from typing import Final, LiteralString

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


def unlimited_candidates_by_claim_index(into: LiteralString) -> LiteralString:
    """The claim function's statement that takes, into the array variable ``into``, the claimable
    tasks of its queue without a limit through the task table's claim index (migration 10's
    version with ``v_got``, migration 14's with ``v_free``; migration 17 reads horsies_ready)."""
    return (
        "    "
        + into
        + """ := ARRAY(
        SELECT t.id FROM horsies_tasks AS t
        WHERE t.queue_name = p_queue_name AND t.limit_name IS NULL
          AND t.status IN ('PENDING', 'CLAIMED')
          AND (t.status = 'PENDING' OR (t.claim_expires_at IS NOT NULL
                                        AND t.claim_expires_at < now()))
          AND t.sent_at <= now() AND (t.next_retry_at IS NULL OR t.next_retry_at <= now())
          AND (t.good_until IS NULL OR t.good_until > now())
          AND (p_task_names IS NULL OR t.task_name = ANY(p_task_names))
        ORDER BY t.priority, t.sent_at, t.id
        LIMIT v_slots
        FOR UPDATE SKIP LOCKED);
"""
    )


def tasks_inserted_function(before_wake_ups: LiteralString) -> LiteralString:
    """``horsies_notify_tasks_inserted()``, the statement-level INSERT trigger's function: runs
    ``before_wake_ups`` (statements over the transition table ``horsies_inserted_tasks``, from a
    comment line on), then sends one wake-up per queue and statement, whatever the number of rows
    (migration 1's version, and migration 16's, which first adds the new tasks' horsies_ready
    rows)."""
    return (
        """
CREATE OR REPLACE FUNCTION horsies_notify_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    q RECORD;
BEGIN
"""
        + before_wake_ups
        + """    FOR q IN
        SELECT queue_name, min(id) AS id FROM horsies_inserted_tasks
        WHERE status = 'PENDING' GROUP BY queue_name
    LOOP
        PERFORM pg_notify('task_new', q.id);
        PERFORM pg_notify('task_queue_' || q.queue_name, q.id);
    END LOOP;
    RETURN NULL;
END
$$;
"""
    )
