"""SQL of the task lifecycle: insert, read, claim, start, finish, retry, release, reap, notify.

Names read noun, verb, precondition (``TASK_FINISH_IF_RUNNING_MANY``); the precondition is in the
WHERE clause, so a late result, a reaper and a second worker can never overwrite each other: callers
compare the returned ids with what they asked for and log the lost races. ``*_MANY`` statements take
arrays (``unnest``) and handle a whole batch in one round trip. Parameters are named (``%(name)s``);
nothing is ever formatted into these strings.
"""

from __future__ import annotations

from typing import Final

# -- producing -------------------------------------------------------------------------------------

# Insert one PENDING task (sent_at NULL = now); the INSERT trigger sends task_new + task_queue_<q>.
TASK_INSERT: Final = """
INSERT INTO horsies_tasks (
    id, task_name, queue_name, priority, args, kwargs, status, sent_at, good_until,
    max_retries, retry_count, task_options, claimed, created_at, updated_at)
VALUES (
    %(id)s, %(task_name)s, %(queue_name)s, %(priority)s, %(args)s, %(kwargs)s, 'PENDING',
    COALESCE(%(sent_at)s::timestamptz, now()), %(good_until)s::timestamptz,
    %(max_retries)s, 0, %(task_options)s, false, now(), now())
"""

# Insert many PENDING tasks in one statement; rows without sent_at get now() minus a microsecond per
# later row, so FIFO order within the batch is the order of the arrays.
TASK_INSERT_MANY: Final = """
INSERT INTO horsies_tasks (
    id, task_name, queue_name, priority, args, kwargs, status, sent_at, good_until,
    max_retries, retry_count, task_options, claimed, created_at, updated_at)
SELECT
    r.id, r.task_name, r.queue_name, r.priority, r.args, r.kwargs, 'PENDING',
    COALESCE(r.sent_at, now() - (count(*) OVER () - r.ord) * interval '1 microsecond'),
    r.good_until, r.max_retries, 0, r.task_options, false, now(), now()
FROM unnest(
    %(ids)s::text[], %(task_names)s::text[], %(queue_names)s::text[], %(priorities)s::int[],
    %(args)s::text[], %(kwargs)s::text[], %(sent_ats)s::timestamptz[],
    %(good_untils)s::timestamptz[],
    %(max_retries)s::int[], %(task_options)s::text[]
) WITH ORDINALITY AS r(
    id, task_name, queue_name, priority, args, kwargs, sent_at, good_until, max_retries,
    task_options, ord)
"""

# -- reading ---------------------------------------------------------------------------------------

# Status, stored result and failure reason of one task (result retrieval).
TASK_GET_RESULT: Final = """
SELECT status, result, failed_reason FROM horsies_tasks WHERE id = %(id)s
"""

# The whole row of one task (monitoring, tests).
TASK_GET: Final = """
SELECT * FROM horsies_tasks WHERE id = %(id)s
"""

# -- claiming --------------------------------------------------------------------------------------

# Serialise claim passes cluster-wide while counting in flight (only when a cluster cap applies).
TASK_CLAIM_LOCK: Final = "SELECT pg_advisory_xact_lock(%(key)s)"

# Cluster-wide in-flight counts per queue (read under TASK_CLAIM_LOCK).
TASK_COUNT_IN_FLIGHT: Final = """
SELECT queue_name,
       count(*) FILTER (WHERE status = 'RUNNING') AS running,
       count(*) FILTER (WHERE status = 'CLAIMED') AS claimed
FROM horsies_tasks
WHERE status IN ('CLAIMED', 'RUNNING')
GROUP BY queue_name
"""

# Claim up to %(limit)s claimable tasks of one queue (PENDING, or CLAIMED with an expired lease;
# due; not expired), most urgent then oldest first, skipping rows another pass has locked.
TASK_CLAIM_AVAILABLE: Final = """
WITH candidates AS (
    SELECT id
    FROM horsies_tasks
    WHERE queue_name = %(queue_name)s
      AND status IN ('PENDING', 'CLAIMED')
      AND (status = 'PENDING' OR (claim_expires_at IS NOT NULL AND claim_expires_at < now()))
      AND sent_at <= now() AND (next_retry_at IS NULL OR next_retry_at <= now())
      AND (good_until IS NULL OR good_until > now())
    ORDER BY priority, sent_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE horsies_tasks AS t
SET status = 'CLAIMED',
    claimed = true,
    claimed_at = now(),
    claimed_by_worker_id = %(worker_id)s,
    claim_expires_at = now() + %(lease_ms)s::int * interval '1 millisecond',
    updated_at = now()
FROM candidates AS c
WHERE t.id = c.id
RETURNING t.id, t.task_name, t.queue_name, t.priority, t.args, t.kwargs, t.retry_count,
          t.max_retries, t.task_options, t.sent_at
"""

# -- executing -------------------------------------------------------------------------------------

# CLAIMED -> RUNNING for (id, child pid) pairs still owned by this worker with an unexpired lease.
TASK_START_IF_CLAIMED_MANY: Final = """
UPDATE horsies_tasks AS t
SET status = 'RUNNING',
    claimed = false,
    claim_expires_at = NULL,
    started_at = now(),
    worker_pid = s.pid,
    worker_hostname = %(hostname)s,
    worker_process_name = 'worker-' || s.pid,
    updated_at = now()
FROM unnest(%(ids)s::text[], %(pids)s::int[]) AS s(id, pid)
WHERE t.id = s.id
  AND t.status = 'CLAIMED'
  AND t.claimed_by_worker_id = %(worker_id)s
  AND (t.claim_expires_at IS NULL OR t.claim_expires_at > now())
RETURNING t.id
"""

# RUNNING -> COMPLETED/FAILED with the stored result (owner and attempt checked when given).
TASK_FINISH_IF_RUNNING_MANY: Final = """
UPDATE horsies_tasks AS t
SET status = CASE WHEN o.ok THEN 'COMPLETED' ELSE 'FAILED' END,
    result = o.result,
    completed_at = CASE WHEN o.ok THEN now() END,
    failed_at = CASE WHEN o.ok THEN NULL ELSE now() END,
    failed_reason = o.failed_reason,
    claimed = false,
    claim_expires_at = NULL,
    updated_at = now()
FROM unnest(%(ids)s::text[], %(results)s::text[], %(oks)s::bool[], %(failed_reasons)s::text[],
            %(retry_counts)s::int[]) AS o(id, result, ok, failed_reason, retry_count)
WHERE t.id = o.id
  AND t.status = 'RUNNING'
  AND (%(worker_id)s::text IS NULL OR t.claimed_by_worker_id = %(worker_id)s::text)
  AND (o.retry_count IS NULL OR t.retry_count = o.retry_count)
RETURNING t.id
"""

# RUNNING -> PENDING for another attempt after a delay (retry_count + 1; result not stored).
TASK_RETRY_IF_RUNNING_MANY: Final = """
UPDATE horsies_tasks AS t
SET status = 'PENDING',
    retry_count = t.retry_count + 1,
    next_retry_at = now() + o.delay_s * interval '1 second',
    sent_at = now() + o.delay_s * interval '1 second',
    failed_reason = o.failed_reason,
    result = NULL,
    claimed = false,
    claimed_at = NULL,
    claimed_by_worker_id = NULL,
    claim_expires_at = NULL,
    updated_at = now()
FROM unnest(%(ids)s::text[], %(delays)s::float8[], %(failed_reasons)s::text[],
            %(retry_counts)s::int[]) AS o(id, delay_s, failed_reason, retry_count)
WHERE t.id = o.id
  AND t.status = 'RUNNING'
  AND (%(worker_id)s::text IS NULL OR t.claimed_by_worker_id = %(worker_id)s::text)
  AND (o.retry_count IS NULL OR t.retry_count = o.retry_count)
RETURNING t.id
"""

# CLAIMED (owned by this worker) -> PENDING, e.g. unstarted claims at graceful shutdown.
TASK_RELEASE_CLAIMED_MANY: Final = """
UPDATE horsies_tasks
SET status = 'PENDING',
    claimed = false,
    claimed_at = NULL,
    claimed_by_worker_id = NULL,
    claim_expires_at = NULL,
    updated_at = now()
WHERE id = ANY(%(ids)s::text[])
  AND status = 'CLAIMED'
  AND claimed_by_worker_id = %(worker_id)s
RETURNING id
"""

# -- recovery --------------------------------------------------------------------------------------

# Let exactly one reaper run at a time cluster-wide (false: another process is reaping).
TASK_REAPER_TRY_LOCK: Final = "SELECT pg_try_advisory_xact_lock(%(key)s)"

# CLAIMED -> PENDING when neither the latest claimer heartbeat nor claimed_at is newer than the
# threshold.
TASK_REQUEUE_STALE_CLAIMED: Final = """
UPDATE horsies_tasks AS t
SET status = 'PENDING',
    claimed = false,
    claimed_at = NULL,
    claimed_by_worker_id = NULL,
    claim_expires_at = NULL,
    updated_at = now()
WHERE t.status = 'CLAIMED'
  AND GREATEST(
        t.claimed_at,
        (SELECT max(h.sent_at) FROM horsies_heartbeats AS h
         WHERE h.task_id = t.id AND h.role = 'claimer')
      ) < now() - %(threshold_ms)s::int * interval '1 millisecond'
RETURNING t.id
"""

# RUNNING tasks whose latest runner heartbeat (or started_at) is older than the threshold, locked.
TASK_GET_STALE_RUNNING: Final = """
SELECT t.id, t.task_name, t.queue_name, t.worker_pid, t.worker_hostname, t.claimed_by_worker_id,
       t.started_at, hb.last_heartbeat, t.retry_count, t.max_retries, t.task_options,
       now() AS detected_at
FROM horsies_tasks AS t
LEFT JOIN LATERAL (
    SELECT max(h.sent_at) AS last_heartbeat FROM horsies_heartbeats AS h
    WHERE h.task_id = t.id AND h.role = 'runner'
) AS hb ON true
WHERE t.status = 'RUNNING'
  AND t.started_at IS NOT NULL
  AND GREATEST(t.started_at, hb.last_heartbeat)
      < now() - %(threshold_ms)s::int * interval '1 millisecond'
ORDER BY t.started_at, t.id
LIMIT %(limit)s
FOR UPDATE OF t SKIP LOCKED
"""

# -- notifications ---------------------------------------------------------------------------------

# Send one notification (wake-ups such as 'capacity' after a finished batch, delayed retry
# wake-ups).
NOTIFY: Final = "SELECT pg_notify(%(channel)s, %(payload)s)"
