"""Read-only SQL of the monitoring methods (docs/worker.md). Rows are returned as dicts."""

from __future__ import annotations

from typing import Final

from horsies.broker.sql import fragments

# RUNNING tasks whose latest runner heartbeat (or started_at) is older than N minutes.
MONITOR_STALE_TASKS: Final = (
    """
SELECT t.id, t.worker_hostname, t.worker_pid, t.worker_process_name, hb.last_heartbeat,
       t.started_at, t.task_name"""
    + fragments.RUNNING_SILENT_SINCE
    + """
      < now() - %(threshold_minutes)s::int * interval '1 minute'
ORDER BY hb.last_heartbeat ASC NULLS FIRST, t.started_at, t.id
"""
)

# RUNNING tasks per executing child process, busiest first.
MONITOR_WORKER_STATS: Final = (
    """
SELECT t.worker_hostname, t.worker_pid, t.worker_process_name,
       count(*) AS active_tasks,
       min(t.started_at) AS oldest_task_start,
       max(hb.last_heartbeat) AS latest_heartbeat"""
    + fragments.TASKS_WITH_LAST_HEARTBEAT
    + """
WHERE t.status = 'RUNNING' AND t.worker_hostname IS NOT NULL
GROUP BY t.worker_hostname, t.worker_pid, t.worker_process_name
ORDER BY active_tasks DESC, t.worker_hostname, t.worker_pid
"""
)

# PENDING tasks past their good_until (never claimable again), oldest deadline first.
MONITOR_EXPIRED_TASKS: Final = """
SELECT id, task_name, queue_name, priority, sent_at, good_until, now() - good_until AS expired_for
FROM horsies_tasks WHERE status = 'PENDING' AND good_until IS NOT NULL AND good_until < now()
ORDER BY good_until, id
"""

# Task counts per queue and status, with the oldest PENDING sent_at.
MONITOR_QUEUE_STATS: Final = """
SELECT queue_name,
       count(*) FILTER (WHERE status = 'PENDING') AS pending,
       count(*) FILTER (WHERE status = 'CLAIMED') AS claimed,
       count(*) FILTER (WHERE status = 'RUNNING') AS running,
       count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
       count(*) FILTER (WHERE status = 'FAILED') AS failed,
       count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled,
       min(sent_at) FILTER (WHERE status = 'PENDING') AS oldest_pending_at
FROM horsies_tasks
GROUP BY queue_name
ORDER BY queue_name
"""

# Latest snapshot of every worker that reported within the last N seconds, unless that snapshot
# says the worker stopped.
MONITOR_WORKER_STATES: Final = """
SELECT *
FROM (
    SELECT DISTINCT ON (worker_id) *
    FROM horsies_worker_states
    WHERE snapshot_at > now() - %(max_age_s)s::float8 * interval '1 second'
    ORDER BY worker_id, snapshot_at DESC
) AS latest
WHERE latest.stopped_at IS NULL
ORDER BY latest.worker_id
"""

# Per limit that workers registered or that live tasks name: its numbers, its tasks waiting
# (PENDING) and the part of them held back (their key is at its concurrency or rate, or no worker
# enforces the limit), its tasks in flight, its starts within the rate's window, its keys with
# waiting tasks, and its busiest keys (the first %(top_keys)s by waiting, then in flight).
# Live rows only: the waiting and in-flight counts read the two partial indexes of limited tasks
# (their predicates are repeated literally so the planner can use them), never a finished row;
# starts are read per registered rate limit from the (limit_name, limit_key, started_at) index.
MONITOR_LIMIT_STATS: Final = """
WITH waiting AS (
    SELECT t.limit_name, t.limit_key, count(*) AS n
    FROM horsies_tasks AS t
    WHERE t.status = 'PENDING' AND t.limit_name IS NOT NULL
    GROUP BY t.limit_name, t.limit_key
),
in_flight AS (
    SELECT t.limit_name, t.limit_key, count(*) AS n
    FROM horsies_tasks AS t
    WHERE t.status IN ('CLAIMED', 'RUNNING') AND t.limit_name IS NOT NULL
    GROUP BY t.limit_name, t.limit_key
),
started AS (
    SELECT s.limit_name, s.limit_key, count(*) AS n
    FROM horsies_limits AS l
    JOIN horsies_limit_starts AS s
      ON s.limit_name = l.name AND s.started_at > now() - l.per_ms * interval '1 millisecond'
    WHERE l.rate IS NOT NULL
    GROUP BY s.limit_name, s.limit_key
),
per_key AS (
    SELECT limit_name, limit_key, coalesce(w.n, 0) AS waiting, coalesce(f.n, 0) AS in_flight,
           coalesce(s.n, 0) AS starts_in_window
    FROM waiting AS w
    FULL JOIN in_flight AS f USING (limit_name, limit_key)
    FULL JOIN started AS s USING (limit_name, limit_key)
),
keyed AS (
    SELECT k.*,
           coalesce(l.name IS NULL OR k.in_flight >= l.concurrency
                    OR k.starts_in_window >= l.rate, false) AS held,
           row_number() OVER (PARTITION BY k.limit_name
                              ORDER BY k.waiting DESC, k.in_flight DESC, k.limit_key) AS rank
    FROM per_key AS k
    LEFT JOIN horsies_limits AS l ON l.name = k.limit_name
)
SELECT coalesce(l.name, k.limit_name) AS name, l.concurrency, l.rate, l.per_ms,
       l.name IS NOT NULL AS registered, l.updated_at,
       coalesce(sum(k.waiting), 0)::bigint AS waiting,
       coalesce(sum(k.waiting) FILTER (WHERE k.held), 0)::bigint AS held,
       coalesce(sum(k.in_flight), 0)::bigint AS in_flight,
       coalesce(sum(k.starts_in_window), 0)::bigint AS starts_in_window,
       count(*) FILTER (WHERE k.waiting > 0) AS keys_waiting,
       coalesce(jsonb_agg(jsonb_build_object(
                    'key', k.limit_key, 'waiting', k.waiting, 'in_flight', k.in_flight,
                    'starts_in_window', k.starts_in_window, 'held', k.held) ORDER BY k.rank)
                FILTER (WHERE k.rank <= %(top_keys)s::int), '[]'::jsonb) AS busiest_keys
FROM horsies_limits AS l
FULL JOIN keyed AS k ON k.limit_name = l.name
GROUP BY coalesce(l.name, k.limit_name), l.name, l.concurrency, l.rate, l.per_ms, l.updated_at
ORDER BY 1
LIMIT 1000
"""

# Per queue named in %(queues)s: its PENDING tasks that are due (sent_at and next_retry_at passed,
# good_until not: a free worker would claim them now) and the seconds since the oldest of them
# became due (NULL when none). Reads the claim index only, never the finished rows.
MONITOR_QUEUE_BACKLOG: Final = """
SELECT q.queue_name,
       count(t.id) AS depth,
       extract(epoch FROM now() - min(t.sent_at))::float8 AS oldest_pending_s
FROM unnest(%(queues)s::text[]) AS q(queue_name)
LEFT JOIN horsies_tasks AS t
       ON t.queue_name = q.queue_name AND t.status = 'PENDING'
      AND t.sent_at <= now() AND (t.next_retry_at IS NULL OR t.next_retry_at <= now())
      AND (t.good_until IS NULL OR t.good_until > now())
GROUP BY q.queue_name
ORDER BY q.queue_name
"""

# How many workers MONITOR_WORKER_STATES lists (the same definition of a live worker).
MONITOR_WORKERS_ALIVE: Final = (
    "SELECT count(*) AS alive FROM (" + MONITOR_WORKER_STATES + ") AS live_workers"
)
