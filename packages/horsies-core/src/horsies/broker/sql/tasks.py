"""SQL of the task lifecycle: insert, read, claim (+ start), start, finish/retry, release, reap,
notify.

Names read noun, verb, precondition (``TASK_FINISH_IF_RUNNING_MANY``); the precondition is in the
WHERE clause, so a late result, a reaper and a second worker can never overwrite each other: callers
compare the returned ids with what they asked for and log the lost races. ``*_MANY`` statements take
arrays (``unnest``) and handle a whole batch in one round trip. Parameters are named (``%(name)s``);
nothing is ever formatted into these strings.
"""

from __future__ import annotations

from typing import Final, LiteralString

from horsies.broker.sql import fragments, ready

# -- producing -------------------------------------------------------------------------------------

_INSERT_ONE_HEAD: Final = """
INSERT INTO horsies_tasks (
    id, task_name, queue_name, priority, args, kwargs, status, sent_at, good_until,
    max_retries, retry_count, task_options, claimed, created_at, updated_at)
VALUES (
    %(id)s, %(task_name)s, %(queue_name)s, %(priority)s, %(args)s, %(kwargs)s, 'PENDING',
    """
_INSERT_ONE_TAIL: Final = """, %(good_until)s::timestamptz,
    %(max_retries)s, 0, %(task_options)s, false, now(), now())
"""

# Insert one PENDING task (sent_at NULL = now); the INSERT trigger sends task_new + task_queue_<q>.
TASK_INSERT: Final = (
    _INSERT_ONE_HEAD + "COALESCE(%(sent_at)s::timestamptz, now())" + _INSERT_ONE_TAIL
)

# The same, claimable %(delay_s)s seconds after the database's clock reads now: a producer whose
# clock is off still delays by exactly that much (``schedule()``).
TASK_INSERT_AFTER_DELAY: Final = (
    _INSERT_ONE_HEAD + "now() + %(delay_s)s::float8 * interval '1 second'" + _INSERT_ONE_TAIL
)


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

# How many of a batch's rows are stored exactly as sent (same id, name and arguments): after an
# insert whose connection was lost, tells whether it had committed (the retry then hit the ids).
TASK_COUNT_STORED_AS_SENT: Final = """
SELECT count(*) FROM horsies_tasks t
JOIN unnest(%(ids)s::text[], %(task_names)s::text[], %(args)s::text[], %(kwargs)s::text[])
    AS s(id, task_name, args, kwargs)
  ON t.id = s.id AND t.task_name = s.task_name
 AND t.args IS NOT DISTINCT FROM s.args AND t.kwargs IS NOT DISTINCT FROM s.kwargs
"""

# Bulk insert (send_many): the columns COPY fills, in order, with their types; the others take
# their defaults (status PENDING, retry_count 0, claimed false, created_at/updated_at now()). The
# statement-level INSERT trigger fires for COPY too: one wake-up per queue.
TASK_COPY_COLUMNS: Final = (
    "id",
    "task_name",
    "queue_name",
    "priority",
    "args",
    "kwargs",
    "sent_at",
    "good_until",
    "max_retries",
    "task_options",
)
TASK_COPY_TYPES: Final = (
    "text",
    "text",
    "text",
    "int4",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "int4",
    "text",
)
# The array parameters of TASK_INSERT_MANY (and of the limited insert), in TASK_COPY_COLUMNS order.
TASK_INSERT_MANY_ARRAYS: Final = (
    "ids",
    "task_names",
    "queue_names",
    "priorities",
    "args",
    "kwargs",
    "sent_ats",
    "good_untils",
    "max_retries",
    "task_options",
)

# The types of TASK_INSERT's parameters, in order of appearance (the same order), for its libpq
# prepared statement (``ops.Prepared``).
TASK_INSERT_TYPES: Final = TASK_COPY_TYPES
TASK_COPY_IN: Final = """
COPY horsies_tasks (id, task_name, queue_name, priority, args, kwargs, sent_at, good_until,
                    max_retries, task_options)
FROM STDIN (FORMAT BINARY)
"""

# send_many's COPY: the same columns with sent_at last, so that the bytes of every row but its
# timestamp can be built before the transaction's clock is read (``ops.TaskBatch``).
_COPY_TYPE_OF: Final[dict[str, str]] = dict(zip(TASK_COPY_COLUMNS, TASK_COPY_TYPES, strict=True))
TASK_BATCH_COPY_COLUMNS: Final = (*(c for c in TASK_COPY_COLUMNS if c != "sent_at"), "sent_at")
TASK_BATCH_COPY_TYPES: Final = tuple(_COPY_TYPE_OF[c] for c in TASK_BATCH_COPY_COLUMNS)
TASK_BATCH_COPY_IN: Final = """
COPY horsies_tasks (id, task_name, queue_name, priority, args, kwargs, good_until, max_retries,
                    task_options, sent_at)
FROM STDIN (FORMAT BINARY)
"""

# The transaction's clock (what now() stores in the same transaction).
TRANSACTION_NOW: Final = "SELECT now()"

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


# The claims' candidates (sql/ready.py): of one queue, and of one queue whose task_name is in
# %(task_names)s (the free slots of children that run async tasks take only async tasks).
_CLAIMABLE_IN_QUEUE: Final = ready.claimable_in_queue("true")
_CLAIMABLE_IN_QUEUE_OF_NAMES: Final = ready.claimable_in_queue(
    "c.task_name = ANY(%(task_names)s::text[])"
)

# The ClaimedTask columns, in ClaimedTask field order.
_CLAIMED_TASK_COLUMNS: Final = """
RETURNING t.id, t.task_name, t.queue_name, t.priority, t.args, t.kwargs, t.retry_count,
          t.max_retries, t.task_options, t.sent_at, t.workflow_id, t.attempt"""

# Appended to a statement whose data-modifying CTE `started` returns the rows it moved to RUNNING:
# their workflow nodes go ENQUEUED -> RUNNING in the same statement (plain tasks have no node and
# are filtered out before the join), then the started rows are the statement's result.
_START_WORKFLOW_NODES: Final = """
started_nodes AS (
    UPDATE horsies_workflow_tasks AS wt
    SET status = 'RUNNING'
    FROM started AS s
    WHERE s.workflow_id IS NOT NULL AND wt.task_id = s.id AND wt.status = 'ENQUEUED'
)
SELECT * FROM started
"""

# Moves the updated rows to RUNNING in the child whose pid is ``s.pid`` (no lease any more).
# started_at is clock_timestamp(), not now(): the exchange that finishes a workflow node starts its
# dependent in the same transaction, and the dependent's start (its node's started_at) must come
# after the dependency's completion, written at now().
_SET_RUNNING_FOR_PID: Final = """
    SET status = 'RUNNING',
        claimed = false,
        claim_expires_at = NULL,
        started_at = clock_timestamp(),
        worker_pid = s.pid,
        worker_hostname = %(hostname)s,
        worker_process_name = 'worker-' || s.pid,
        updated_at = now()"""


# Claim up to %(limit)s claimable tasks of one queue (PENDING, or CLAIMED with an expired lease;
# due; not expired), most urgent then oldest first, skipping rows another pass has locked. Each
# claim is a new attempt (see the attempt column in schema.py).
def _claim(claimable: LiteralString) -> LiteralString:
    """The claim statement over the candidates ``claimable`` selects."""
    return (
        """
WITH candidates AS (
    SELECT c.id"""
        + claimable
        + """    LIMIT %(limit)s
)
UPDATE horsies_tasks AS t
SET status = 'CLAIMED',
    claimed = true,
    claimed_at = now(),
    claimed_by_worker_id = %(worker_id)s,
    claim_expires_at = now() + %(lease_ms)s::int * interval '1 millisecond',
    attempt = t.attempt + 1,
    updated_at = now()
WHERE t.id = ANY(ARRAY(SELECT id FROM candidates))"""
        + _CLAIMED_TASK_COLUMNS
        + "\n"
    )


TASK_CLAIM_AVAILABLE: Final = _claim(_CLAIMABLE_IN_QUEUE)

# The same, of the tasks named in %(task_names)s only (the free slots of children running async
# tasks, with cluster-wide caps).
TASK_CLAIM_AVAILABLE_OF_NAMES: Final = _claim(_CLAIMABLE_IN_QUEUE_OF_NAMES)


def _claim_and_start(claimable: LiteralString) -> LiteralString:
    """The claim-and-start statement over the candidates ``claimable`` selects."""
    return (
        """
WITH candidates AS (
    SELECT c.id, c.priority, c.sent_at"""
        + claimable
        + """    LIMIT cardinality(%(pids)s::int[])
),
numbered AS (
    SELECT id, row_number() OVER (ORDER BY priority, sent_at, id) AS n FROM candidates
),
assigned AS (
    SELECT c.id, p.pid
    FROM numbered AS c
    JOIN unnest(%(pids)s::int[]) WITH ORDINALITY AS p(pid, n) ON p.n = c.n
),
started AS (
    UPDATE horsies_tasks AS t"""
        + _SET_RUNNING_FOR_PID
        + """,
        claimed_at = now(),
        claimed_by_worker_id = %(worker_id)s,
        attempt = t.attempt + 1
    FROM assigned AS s
    WHERE t.id = s.id"""
        + _CLAIMED_TASK_COLUMNS
        + """, s.pid
),"""
        + _START_WORKFLOW_NODES
    )


# Claim and start in one step (hard-cap mode without cluster-wide caps): lock up to one claimable
# task of one queue per idle child, most urgent then oldest first, skipping rows another pass has
# locked, and move them PENDING -> RUNNING at once, the n-th task to the n-th pid of %(pids)s. No
# CLAIMED phase: the worker sends each row to its child as soon as the statement returns.
TASK_CLAIM_AND_START_AVAILABLE: Final = _claim_and_start(_CLAIMABLE_IN_QUEUE)

# TASK_CLAIM_AND_START_AVAILABLE for the free slots of children that run async tasks; a pid is
# listed once per free slot.
TASK_CLAIM_AND_START_AVAILABLE_OF_NAMES: Final = _claim_and_start(_CLAIMABLE_IN_QUEUE_OF_NAMES)


# For the rest of the current transaction, run prepared statements with their generic plan.
# PostgreSQL's automatic choice keeps re-planning the claim statement on every execution (it cannot
# cost a generic `LIMIT $n`, so the generic plan never looks cheaper), and planning it costs about
# twice its execution. Only sent before statements whose generic plans stay on their indexes:
# TASK_CLAIM_AND_START_AVAILABLE and TASK_CLAIM_AVAILABLE (horsies_ready in order; rows by primary
# key), TASK_START_IF_CLAIMED_MANY and TASK_FINISH_IF_RUNNING_MANY (primary key),
# TASK_REQUEUE_UNTRACKED_RUNNING and TASK_COUNT_IN_FLIGHT (in-flight index),
# TASK_RELEASE_CLAIMED_MANY (primary key), the limited claim (a function planned its own way).
# Sequential and bitmap scans are off too: a plan made while horsies_ready was nearly empty (a
# generic one is kept until the statistics change; a custom one reads the same statistics) read it
# whole and sorted it above the claim's locking sub-select, so that each claim checked and locked
# every task of the queue; with an index scan of horsies_ready the only way in, its order is the
# index's and the claim stops at its LIMIT. Every transaction that claims starts with this
# (broker/claims.py CLAIM_PLAN_SETTINGS).
_GENERIC_PLANS_ON_INDEXES: Final = """
SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true)"""
TASK_PLANS_GENERIC_IN_TRANSACTION: Final = _GENERIC_PLANS_ON_INDEXES + "\n"

# The same, and the transaction's commit does not wait for the WAL flush. Only for a worker
# exchange that writes no outcome: it claims and starts tasks, and if PostgreSQL crashes before the
# flush (at most wal_writer_delay later, or the next durable commit, whichever comes first) those
# rows are back in the state they had: PENDING (claimable again) or CLAIMED with a lease. A restart
# (fast or smart shutdown) flushes everything.
TASK_PLANS_GENERIC_ASYNC_COMMIT_IN_TRANSACTION: Final = (
    _GENERIC_PLANS_ON_INDEXES + ",\n       set_config('synchronous_commit', 'off', true)\n"
)

# -- executing -------------------------------------------------------------------------------------

# CLAIMED -> RUNNING for (id, attempt, child pid) triples still owned by this worker, in that
# attempt, with an unexpired lease (`t.id = ANY(ids)`: see TASK_FINISH_IF_RUNNING_MANY). The attempt
# tells apart two copies of one task a worker may hold (a claim whose lease expired, claimed
# again): only the current one starts. With %(resume)s true (the repeat of a call whose
# connection was lost) rows this very call may already have started (RUNNING, owned by this
# worker, same attempt and pid) are returned as started too.
TASK_START_IF_CLAIMED_MANY: Final = (
    """
WITH started AS (
    UPDATE horsies_tasks AS t"""
    + _SET_RUNNING_FOR_PID
    + """
    FROM unnest(%(ids)s::text[], %(attempts)s::int[], %(pids)s::int[]) AS s(id, attempt, pid)
    WHERE t.id = s.id
      AND t.id = ANY(%(ids)s::text[])
      AND t.attempt = s.attempt
      AND t.claimed_by_worker_id = %(worker_id)s
      AND ((t.status = 'CLAIMED' AND (t.claim_expires_at IS NULL OR t.claim_expires_at > now()))
        OR (%(resume)s AND t.status = 'RUNNING' AND t.worker_pid = s.pid))
    RETURNING t.id, t.attempt, t.workflow_id
),"""
    + _START_WORKFLOW_NODES
)

# RUNNING -> COMPLETED/FAILED with the stored result, or RUNNING -> PENDING for another attempt
# when the outcome has a retry delay_s (retry_count + 1, due after the delay, result not stored).
# Once a stop was requested (cancel_requested_at, see TASK_REQUEST_STOP_IF_RUNNING) an ok result
# still completes the task, and every other end (the stop itself, a failure, a crash) makes it
# CANCELLED, never retried. The test of t.cancel_requested_at is repeated in each SET expression
# rather than read once in the FROM list: only there does it see the row as locked by this UPDATE,
# so a stop requested while the statement waited for the lock is not missed:
# every outcome of a batch in one statement (owner and attempt checked when given: an outcome of
# any other attempt than the row's changes nothing). Outcomes come as one JSON array of
# {id, result, ok, failed_reason, attempt, delay_s} objects (far cheaper to send than six parallel
# arrays); the redundant `t.id = ANY(ids)` keeps even a generic plan on the primary key instead of
# a scan of every RUNNING row. An attempt that goes back to PENDING for a retry is kept in
# horsies_task_attempts (with the result that made it retry); the row itself keeps the last one.
TASK_FINISH_IF_RUNNING_MANY: Final = """
WITH finished AS (
UPDATE horsies_tasks AS t
SET status = CASE WHEN o.ok THEN 'COMPLETED' WHEN t.cancel_requested_at IS NOT NULL THEN 'CANCELLED'
                  WHEN o.retry THEN 'PENDING' ELSE 'FAILED' END,
    result = CASE WHEN o.retry AND t.cancel_requested_at IS NULL THEN NULL ELSE o.result END,
    completed_at = CASE WHEN o.ok THEN now()
                        WHEN o.retry AND t.cancel_requested_at IS NULL THEN t.completed_at END,
    failed_at = CASE WHEN o.ok OR t.cancel_requested_at IS NOT NULL THEN NULL
                     WHEN o.retry THEN t.failed_at ELSE now() END,
    failed_reason = o.failed_reason,
    retry_count = t.retry_count
        + CASE WHEN o.retry AND t.cancel_requested_at IS NULL THEN 1 ELSE 0 END,
    next_retry_at = CASE WHEN o.retry AND t.cancel_requested_at IS NULL THEN o.due_at
                         ELSE t.next_retry_at END,
    sent_at = CASE WHEN o.retry AND t.cancel_requested_at IS NULL THEN o.due_at ELSE t.sent_at END,
    claimed = false,
    claimed_at = CASE WHEN o.retry AND t.cancel_requested_at IS NULL THEN NULL
                      ELSE t.claimed_at END,
    claimed_by_worker_id = CASE WHEN o.retry AND t.cancel_requested_at IS NULL THEN NULL
                                ELSE t.claimed_by_worker_id END,
    claim_expires_at = NULL,
    updated_at = now()
FROM (
    SELECT u.id, u.result, u.ok, u.failed_reason, u.attempt,
           u.delay_s IS NOT NULL AS retry,
           now() + greatest(u.delay_s, 0) * interval '1 second' AS due_at
    FROM json_to_recordset(%(outcomes)s::json)
        AS u(id text, result text, ok bool, failed_reason text, attempt int, delay_s float8)
) AS o
WHERE t.id = o.id
  AND t.id = ANY(%(ids)s::text[])
  AND t.status = 'RUNNING'
  AND (%(worker_id)s::text IS NULL OR t.claimed_by_worker_id = %(worker_id)s::text)
  AND (o.attempt IS NULL OR t.attempt = o.attempt)
RETURNING t.id, t.status, t.attempt, t.started_at, t.worker_hostname, t.worker_pid,
          o.result AS attempt_result, o.failed_reason AS attempt_reason
),
retried AS (
    INSERT INTO horsies_task_attempts (
        task_id, attempt, started_at, ended_at, worker_id, hostname, pid, status, result,
        failed_reason)
    SELECT id, attempt, started_at, now(), %(worker_id)s::text, worker_hostname, worker_pid,
           'RETRIED', attempt_result, attempt_reason
    FROM finished
    WHERE status = 'PENDING'
    ON CONFLICT DO NOTHING
)
SELECT id FROM finished
"""

# With no claim: any worker may take the rows again.
_UNCLAIMED: Final = """
    claimed = false,
    claimed_at = NULL,
    claimed_by_worker_id = NULL,
    claim_expires_at = NULL,
    updated_at = now()"""

# Back to PENDING with no claim.
_SET_PENDING_UNCLAIMED: Final = (
    """
SET status = 'PENDING',"""
    + _UNCLAIMED
)

# The named (id, attempt) pairs of a statement over horsies_tasks AS t.
_NAMED_ATTEMPTS: Final = """
  AND t.id = ANY(%(ids)s::text[])
  AND (t.id, t.attempt) IN (SELECT * FROM unnest(%(ids)s::text[], %(attempts)s::int[]))
"""

# CLAIMED (owned by this worker, in the named attempts) -> PENDING, e.g. unstarted claims at
# graceful shutdown.
TASK_RELEASE_CLAIMED_MANY: Final = (
    """
UPDATE horsies_tasks AS t"""
    + _SET_PENDING_UNCLAIMED
    + """
WHERE t.status = 'CLAIMED'
  AND t.claimed_by_worker_id = %(worker_id)s"""
    + _NAMED_ATTEMPTS
    + """RETURNING t.id
"""
)

# RUNNING (owned by this worker) -> PENDING for rows the worker is not running: started by a claim
# whose reply was lost (connection dropped after the commit) or whose child died before the
# hand-over, so no child ever ran them (not an attempt: retry_count stays). A row whose stop was
# requested meanwhile is CANCELLED instead: it never ran, and nobody wants it to. Only the owning
# worker may run this, passing every task it still runs or has an unwritten outcome for.
_REQUEUE_NEVER_STARTED: Final = (
    """
UPDATE horsies_tasks AS t
SET status = CASE WHEN t.cancel_requested_at IS NULL THEN 'PENDING' ELSE 'CANCELLED' END,"""
    + _UNCLAIMED
    + """,
    started_at = NULL,
    worker_pid = NULL,
    worker_hostname = NULL,
    worker_process_name = NULL
WHERE t.status = 'RUNNING'
  AND t.claimed_by_worker_id = %(worker_id)s"""
)

# (The attempts the worker holds are kept: a row in any other attempt is not in its hands.)
TASK_REQUEUE_UNTRACKED_RUNNING: Final = (
    _REQUEUE_NEVER_STARTED
    + """
  AND (t.id, t.attempt) NOT IN (
      SELECT * FROM unnest(%(keep_ids)s::text[], %(keep_attempts)s::int[]))
RETURNING t.id
"""
)

# The same for named rows: tasks a worker started and handed to a child process that died before
# beginning them (queued behind the task it was running, or lost in the hand-over). Unlike the
# untracked form it is safe while other round trips of the worker start tasks.
TASK_REQUEUE_RUNNING_MANY: Final = (
    _REQUEUE_NEVER_STARTED
    + _NAMED_ATTEMPTS
    + """RETURNING t.id
"""
)

# -- operator actions ------------------------------------------------------------------------------

# The workflow of one task (NULL for a plain task): whose tree an action must lock first.
TASK_GET_WORKFLOW_ID: Final = """
SELECT workflow_id FROM horsies_tasks WHERE id = %(id)s
"""

# Cancel a task no worker has started (PENDING, or CLAIMED and not yet RUNNING).
TASK_CANCEL_IF_NOT_STARTED: Final = """
UPDATE horsies_tasks
SET status = 'CANCELLED', claimed = false, claim_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND status IN ('PENDING', 'CLAIMED')
RETURNING id
"""

# Ask the worker running a plain task to stop it (a workflow's task is left to its workflow): the
# request is recorded on the row, and the run's end decides (TASK_FINISH_IF_RUNNING_MANY).
TASK_REQUEST_STOP_IF_RUNNING: Final = """
UPDATE horsies_tasks
SET cancel_requested_at = COALESCE(cancel_requested_at, now()), updated_at = now()
WHERE id = %(id)s AND status = 'RUNNING' AND workflow_id IS NULL
RETURNING id
"""

# Run an ended plain task again from scratch (FAILED/CANCELLED -> PENDING, due now, retry count
# and the previous run cleared from the row, which is kept in horsies_task_attempts when it had
# started). Workflow tasks are excluded: their node has already ended and the workflow moved on.
TASK_RETRY_IF_ENDED: Final = """
WITH ended AS (
    SELECT id, attempt, started_at, COALESCE(failed_at, completed_at, updated_at) AS ended_at,
           claimed_by_worker_id, worker_hostname, worker_pid, status, result, failed_reason
    FROM horsies_tasks
    WHERE id = %(id)s AND status IN ('FAILED', 'CANCELLED') AND workflow_id IS NULL
    FOR UPDATE
),
kept AS (
    INSERT INTO horsies_task_attempts (
        task_id, attempt, started_at, ended_at, worker_id, hostname, pid, status, result,
        failed_reason)
    SELECT id, attempt, started_at, ended_at, claimed_by_worker_id, worker_hostname, worker_pid,
           status, result, failed_reason
    FROM ended
    WHERE started_at IS NOT NULL
    ON CONFLICT DO NOTHING
)
UPDATE horsies_tasks
SET status = 'PENDING', result = NULL, failed_reason = NULL, completed_at = NULL,
    failed_at = NULL, cancel_requested_at = NULL, claimed = false, claimed_at = NULL,
    claimed_by_worker_id = NULL,
    claim_expires_at = NULL, started_at = NULL, worker_pid = NULL, worker_hostname = NULL,
    worker_process_name = NULL, retry_count = 0, next_retry_at = NULL, sent_at = now(),
    updated_at = now()
WHERE id = (SELECT id FROM ended)
RETURNING queue_name
"""

# -- recovery --------------------------------------------------------------------------------------

# Let exactly one reaper run at a time cluster-wide (false: another process is reaping).
TASK_REAPER_TRY_LOCK: Final = "SELECT pg_try_advisory_xact_lock(%(key)s)"

# CLAIMED -> PENDING when neither the latest claimer heartbeat of its attempt nor claimed_at is
# newer than the threshold.
TASK_REQUEUE_STALE_CLAIMED: Final = (
    """
UPDATE horsies_tasks AS t"""
    + _SET_PENDING_UNCLAIMED
    + """
WHERE t.status = 'CLAIMED'
  AND GREATEST(
        t.claimed_at,
        (SELECT max(h.sent_at) FROM horsies_heartbeats AS h
         WHERE h.task_id = t.id AND h.role = 'claimer'
           AND (h.attempt IS NULL OR h.attempt = t.attempt))
      ) < now() - %(threshold_ms)s::int * interval '1 millisecond'
RETURNING t.id
"""
)

# RUNNING tasks whose latest runner heartbeat (or started_at) is older than the threshold, locked
# (columns: the fields of the reaper's _StaleRun, in order).
TASK_GET_STALE_RUNNING: Final = (
    """
SELECT t.id, t.task_name, t.queue_name, t.worker_pid, t.worker_hostname, t.claimed_by_worker_id,
       t.started_at, hb.last_heartbeat, t.retry_count, t.max_retries, t.task_options,
       now() AS detected_at, t.workflow_id, t.attempt"""
    + fragments.RUNNING_SILENT_SINCE
    + """
      < now() - %(threshold_ms)s::int * interval '1 millisecond'
ORDER BY t.started_at, t.id
LIMIT %(limit)s
FOR UPDATE OF t SKIP LOCKED
"""
)

# -- notifications ---------------------------------------------------------------------------------

# Send one notification (wake-ups such as 'capacity' after a finished batch, delayed retry
# wake-ups).
NOTIFY: Final = "SELECT pg_notify(%(channel)s, %(payload)s)"
