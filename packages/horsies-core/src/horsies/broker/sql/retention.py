"""SQL of retention: batched deletes of finished work, heartbeats and snapshots past their period
(see ``broker/retention.py``). Each statement deletes at most ``%(batch)s`` rows, oldest first,
skipping rows another transaction holds, so no prune ever waits on a claim or a finish or holds
locks for long. Periods are seconds before the database's ``now()``."""

from __future__ import annotations

from typing import Final

# Cluster-wide: one pruner at a time (tried, never waited for; held for one batch).
PRUNE_TRY_LOCK: Final = "SELECT pg_try_advisory_xact_lock(%(key)s)"

# Tasks outside workflows that ended more than %(keep_s)s seconds ago; with %(queue_name)s or
# %(task_name)s only those, and never those of %(skip_queues)s / %(skip_tasks)s (they have a period
# of their own). Rows of workflow nodes go with their workflow.
_ENDED_TASKS: Final = """
    FROM horsies_tasks
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND workflow_id IS NULL
      AND updated_at < now() - %(keep_s)s::float8 * interval '1 second'
      AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s::text)
      AND (%(task_name)s::text IS NULL OR task_name = %(task_name)s::text)
      AND queue_name <> ALL(%(skip_queues)s::text[])
      AND task_name <> ALL(%(skip_tasks)s::text[])
"""

# Returns how many tasks went; their kept attempts go with them. The rows are deleted by their
# physical address (stable: they are locked): finding each again by its random UUID id cost a
# probe of the primary key per row, most of the prune's time on a big table.
TASKS_PRUNE: Final = (
    """
WITH gone AS (
    DELETE FROM horsies_tasks AS t
    WHERE t.ctid = ANY(ARRAY(
        SELECT ctid"""
    + _ENDED_TASKS
    + """        ORDER BY updated_at
        LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED))
    RETURNING t.id
),
attempts AS (
    DELETE FROM horsies_task_attempts AS a USING gone WHERE a.task_id = gone.id
)
SELECT count(*) FROM gone
"""
)

TASKS_PRUNE_COUNT: Final = "SELECT count(*)" + _ENDED_TASKS

# Root workflows that ended more than %(keep_s)s seconds ago and none of whose tree's tasks is
# still waiting or running (a cancelled workflow may have had a node running).
_ENDED_ROOTS: Final = """
    FROM horsies_workflows AS w
    WHERE w.parent_workflow_id IS NULL AND w.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
      AND w.updated_at < now() - %(keep_s)s::float8 * interval '1 second'
      AND NOT EXISTS (
          SELECT 1 FROM horsies_workflows AS c JOIN horsies_tasks AS t ON t.workflow_id = c.id
          WHERE (c.root_workflow_id = w.id OR c.id = w.id)
            AND t.status IN ('PENDING', 'CLAIMED', 'RUNNING'))
"""

# Up to %(batch)s ended root workflows with their trees: child workflows, nodes and node tasks
# (and their kept attempts). Returns how many workflows went.
WORKFLOWS_PRUNE: Final = (
    """
WITH roots AS (
    SELECT w.id"""
    + _ENDED_ROOTS
    + """    ORDER BY w.updated_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
),
tree AS (
    SELECT w.id FROM horsies_workflows AS w JOIN roots AS r ON w.root_workflow_id = r.id
    UNION
    SELECT id FROM roots
),
tasks AS (
    DELETE FROM horsies_tasks AS t USING tree WHERE t.workflow_id = tree.id RETURNING t.id
),
attempts AS (
    DELETE FROM horsies_task_attempts AS a USING tasks WHERE a.task_id = tasks.id
),
nodes AS (
    DELETE FROM horsies_workflow_tasks AS n USING tree WHERE n.workflow_id = tree.id
),
gone AS (
    DELETE FROM horsies_workflows AS w USING tree WHERE w.id = tree.id RETURNING w.id
)
SELECT count(*) FROM gone
"""
)

WORKFLOWS_PRUNE_COUNT: Final = "SELECT count(*)" + _ENDED_ROOTS

# Heartbeats and snapshots older than %(keep_s)s seconds (rows are appended in time order, so the
# oldest are found first without an index on their time).
HEARTBEATS_PRUNE: Final = """
DELETE FROM horsies_heartbeats
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM horsies_heartbeats
    WHERE sent_at < now() - %(keep_s)s::float8 * interval '1 second'
    LIMIT %(batch)s))
"""

HEARTBEATS_PRUNE_COUNT: Final = """
SELECT count(*) FROM horsies_heartbeats
WHERE sent_at < now() - %(keep_s)s::float8 * interval '1 second'
"""

WORKER_STATES_PRUNE: Final = """
DELETE FROM horsies_worker_states
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM horsies_worker_states
    WHERE snapshot_at < now() - %(keep_s)s::float8 * interval '1 second'
    ORDER BY snapshot_at
    LIMIT %(batch)s))
"""

WORKER_STATES_PRUNE_COUNT: Final = """
SELECT count(*) FROM horsies_worker_states
WHERE snapshot_at < now() - %(keep_s)s::float8 * interval '1 second'
"""

# Logged starts of rate-limited keys that left their limit's window (a key a claim never visits
# again keeps its last ones otherwise); those of a limit no worker registers any more after 31 days,
# the longest window a limit may have.
LIMIT_STARTS_PRUNE: Final = """
DELETE FROM horsies_limit_starts AS s
WHERE s.ctid = ANY(ARRAY(
    SELECT s.ctid FROM horsies_limit_starts AS s
    LEFT JOIN horsies_limits AS l ON l.name = s.limit_name
    WHERE s.started_at < now() - COALESCE(l.per_ms, 2678400000) * interval '1 millisecond'
    LIMIT %(batch)s))
"""

LIMIT_STARTS_PRUNE_COUNT: Final = """
SELECT count(*) FROM horsies_limit_starts AS s
LEFT JOIN horsies_limits AS l ON l.name = s.limit_name
WHERE s.started_at < now() - COALESCE(l.per_ms, 2678400000) * interval '1 millisecond'
"""

# Migration 11: finished plain tasks by the time they ended, the order a prune takes them in.
# Partial on ended rows outside workflows: a task enters it once, when it ends.
V11_RETENTION: Final = """
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_ended
    ON horsies_tasks (updated_at)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND workflow_id IS NULL;
"""
