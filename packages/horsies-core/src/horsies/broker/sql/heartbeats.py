"""SQL of worker liveness: task heartbeats and worker state snapshots."""

from __future__ import annotations

from typing import Final

# One row per (task, attempt, role) of a worker in one statement: 'claimer' rows for its CLAIMED
# tasks, 'runner' rows for its RUNNING tasks (sender '<worker id>:<child pid>'). Returns the running
# ones whose stop was requested: the worker learns of a stop it missed the notification of.
HEARTBEAT_INSERT_MANY: Final = """
WITH beats AS (
    INSERT INTO horsies_heartbeats (task_id, attempt, sender_id, role, sent_at, hostname, pid)
    SELECT h.task_id, h.attempt, h.sender_id, h.role, now(), %(hostname)s, h.pid
    FROM unnest(
        %(task_ids)s::text[], %(attempts)s::int[], %(sender_ids)s::text[], %(roles)s::text[],
        %(pids)s::int[]
    ) AS h(task_id, attempt, sender_id, role, pid)
)
SELECT t.id FROM horsies_tasks AS t
WHERE t.id = ANY(%(running_ids)s::text[])
  AND t.status = 'RUNNING' AND t.cancel_requested_at IS NOT NULL
"""

# One worker state snapshot (snapshot_at = now(); stopped_at = now() on a stopping worker's last;
# limits: JSON of queue name -> the limit names the worker enforces there).
WORKER_STATE_INSERT: Final = """
INSERT INTO horsies_worker_states (
    worker_id, snapshot_at, hostname, pid, processes, max_claim_batch, max_claim_per_worker,
    cluster_wide_cap, queues, queue_priorities, queue_max_concurrency, recovery_config,
    tasks_running, tasks_claimed, memory_usage_mb, memory_percent, cpu_percent, worker_started_at,
    stopped_at, async_concurrency, limits)
VALUES (
    %(worker_id)s, now(), %(hostname)s, %(pid)s, %(processes)s, %(max_claim_batch)s,
    %(max_claim_per_worker)s, %(cluster_wide_cap)s, %(queues)s::varchar[],
    %(queue_priorities)s::jsonb, %(queue_max_concurrency)s::jsonb, %(recovery_config)s::jsonb,
    %(tasks_running)s, %(tasks_claimed)s, %(memory_usage_mb)s, %(memory_percent)s, %(cpu_percent)s,
    %(worker_started_at)s, CASE WHEN %(stopped)s::boolean THEN now() END, %(async_concurrency)s,
    %(limits)s::jsonb)
"""
